"""Seeing inside a task model: saliency, guided backprop, Grad-CAM, occlusion, class models, features.

Built on `tf.GradientTape` and on temporary per-layer hooks (`layer_hooks`), so it works
on the subclassed task models as they are (no cloning): `targets` turns a model and one
image into "the score" a user means per family, `attribution` maps it onto pixels,
`class_model` climbs it, `features` looks at filters, channels and object embeddings.
"""
