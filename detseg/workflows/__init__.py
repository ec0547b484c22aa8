"""Workflows: the steps a command runs (export, ...), callable from Python without the command line."""
