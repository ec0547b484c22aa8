"""The dependency-free core every room may import: contract constants and the atomic writer.

Nothing here imports TensorFlow or any other room of detseg.
"""
