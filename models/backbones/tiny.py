"""The `tiny` backbone: a ~130k-parameter CNN for CPU tests, demos and smoke configs.

A stem and four stages of conv/BatchNorm/ReLU, each stage halving the resolution, so
the stage outputs have strides 4, 8, 16, 32 (P3 = stage 2, P4 = stage 3, P5 = stage 4).
Each stage is a strided 3x3 convolution followed by a depthwise-separable 3x3 block,
which keeps the parameter count small. At 128 px one image costs about 11 M
multiply-adds, so a few training steps take well under a second on a laptop core.

Layer names start with `stem_` or `stage<k>_`: `models.transfer.backbone_blocks`
groups layers into blocks by these prefixes.
"""

from __future__ import annotations

import keras

# Output channels of the stem and of stages 1..4 at alpha = 1.
TINY_WIDTHS = (16, 24, 32, 64, 128)
# Short CPU trainings take a few hundred steps: with Keras' default momentum (0.99) the
# moving statistics would still mostly hold their initial values at evaluation time.
BATCHNORM_MOMENTUM = 0.9
# Which stage (1-based) gives which pyramid level.
TINY_LEVEL_STAGES = {"P3": 2, "P4": 3, "P5": 4}


def scaled_width(width: int, alpha: float) -> int:
    """`width * alpha` rounded to a multiple of 8 (at least 8), as MobileNet does."""
    return max(8, int(round(width * alpha / 8.0)) * 8)


def _conv_bn_relu(x, filters: int, strides: int, prefix: str):
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(name=f"{prefix}_relu")(x)


def _stage(x, filters: int, index: int):
    """Stride-2 conv, then a depthwise-separable conv: `[B, h, w, c] -> [B, h/2, w/2, filters]`."""
    prefix = f"stage{index}"
    x = _conv_bn_relu(x, filters, strides=2, prefix=f"{prefix}_down")
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
    x = keras.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"{prefix}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{prefix}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_pwconv")(x)
    x = keras.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"{prefix}_pw_bn")(x)
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def tiny_backbone_features(normalized_images, alpha: float = 1.0) -> dict:
    """Builds the tiny network on a normalized `[B, H, W, 3]` Keras tensor.

    Returns `{"P3": [B, H/8, W/8, c3], "P4": [B, H/16, W/16, c4], "P5": [B, H/32, W/32, c5]}`
    with `c3, c4, c5 = 32, 64, 128` at alpha 1 (scaled by `alpha`).
    """
    widths = [scaled_width(width, alpha) for width in TINY_WIDTHS]
    x = _conv_bn_relu(normalized_images, widths[0], strides=2, prefix="stem")
    stage_outputs = {}
    for index, filters in enumerate(widths[1:], start=1):
        x = _stage(x, filters, index)
        stage_outputs[index] = x
    return {level: stage_outputs[stage] for level, stage in TINY_LEVEL_STAGES.items()}
