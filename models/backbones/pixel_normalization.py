"""`PixelNormalization`: a backbone's ImageNet input normalization as a Keras layer.

Every detseg model takes raw pixels (float32 `[B, H, W, 3]`, RGB, 0..255) and
normalizes them inside, as its first layer, so a saved model needs no outside
preprocessing and training and serving cannot disagree (docs: DESIGN.md). The
modes reproduce `keras.applications.imagenet_utils.preprocess_input` exactly:

- `"tf"`: `x / 127.5 - 1`, range -1..1 (MobileNetV2 and the tiny backbone).
- `"caffe"`: RGB -> BGR, then minus the ImageNet BGR mean, no scaling (ResNet50, VGG16).
- `"torch"`: `(x / 255 - mean) / std` with the ImageNet RGB mean and std.

The layer has no weights, so it never changes what a weights file holds.
"""

from __future__ import annotations

import keras
from keras import ops

NORMALIZATION_MODES = ("tf", "caffe", "torch")

# ImageNet statistics as used by keras.applications.
IMAGENET_MEAN_BGR_PIXELS = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="detseg")
class PixelNormalization(keras.layers.Layer):
    """Normalizes raw RGB pixels `[..., 3]` in 0..255 the way a backbone was trained.

    Args:
        mode: one of `NORMALIZATION_MODES` (see the module docstring).

    Input and output: float32 `[B, H, W, 3]`; the output is BGR for `"caffe"`.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"PixelNormalization: unknown mode {mode!r}; expected one of {NORMALIZATION_MODES}")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR_PIXELS, dtype=bgr.dtype)
        mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, dtype=images.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD_RGB, dtype=images.dtype)
        return (images / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
