"""EfficientNet-Lite0/1/2 as Keras 3 functional models (the backbone and the ImageNet classifier).

EfficientNet-Lite is EfficientNet made friendly to quantized and mobile inference:
EfficientNet-B0's MBConv blocks without squeeze-and-excitation, ReLU6 instead of swish,
and a stem (32 channels) and head (1280 channels) that are not scaled with the width.
Variants scale the width (channels, rounded to multiples of 8) and the depth (repeats,
rounded up; the first and last stage keep one block each).

| name                 | width | depth | resolution | blocks | P3 / P4 / P5 channels |
|----------------------|-------|-------|------------|--------|-----------------------|
| `efficientnet_lite0` | 1.0   | 1.0   | 224        | 16     | 40, 112, 1280         |
| `efficientnet_lite1` | 1.0   | 1.1   | 240        | 21     | 40, 112, 1280         |
| `efficientnet_lite2` | 1.1   | 1.2   | 260        | 21     | 48, 120, 1280         |

Layers are named like keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`,
`block2a_dwconv`, `block2b_add`, `top_activation`, `predictions`), so
`transfer.backbone_blocks` finds the MBConv blocks by their `block<stage><letter>_` prefix.
Convolutions pad like TensorFlow's 'same' (more on the bottom/right for stride 2), with
BatchNorm epsilon 1e-3, as the original TensorFlow weights were trained. The input
normalization of those weights, `(x - 127) / 128`, is the first layer, so the models take
raw RGB pixels in 0..255.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import keras

from detseg.core.contract import FEATURE_LEVELS

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CHANNEL_DIVISOR = 8
BATCHNORM_EPSILON = 1e-3
BATCHNORM_MOMENTUM = 0.99
IMAGENET_CLASSES = 1000
# The original TensorFlow EfficientNet-Lite input normalization: (pixels - 127) / 128.
INPUT_MEAN_PIXEL = 127.0
INPUT_STD_PIXEL = 128.0


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite: width and depth multipliers, native resolution."""

    width: float
    depth: float
    resolution: int
    dropout: float


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks (EfficientNet-B0's block arguments, before scaling)."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    input_channels: int
    output_channels: int


EFFICIENTNET_LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_lite1": LiteVariant(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_lite2": LiteVariant(width=1.1, depth=1.2, resolution=260, dropout=0.3),
}
B0_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


def round_channels(channels: int, width: float) -> int:
    """`channels * width` rounded to a multiple of 8, never more than 10% below it."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def scaled_stages(variant: LiteVariant) -> list[StageArgs]:
    """B0's stages scaled by the variant; Lite keeps the first and last stage at one block."""
    stages = []
    for index, stage in enumerate(B0_STAGES):
        fixed = index in (0, len(B0_STAGES) - 1)
        repeats = stage.repeats if fixed else int(math.ceil(variant.depth * stage.repeats))
        stages.append(StageArgs(repeats, stage.kernel, stage.stride, stage.expand_ratio,
                                round_channels(stage.input_channels, variant.width),
                                round_channels(stage.output_channels, variant.width)))
    return stages


def block_prefixes(variant: LiteVariant) -> list[str]:
    """`block<stage><letter>` of every MBConv block, bottom to top (`block1a`, `block2a`, ...).

    The i-th entry is the block PyTorch checkpoints call `_blocks.{i}`.
    """
    return [f"block{stage_number}{string.ascii_lowercase[repeat]}"
            for stage_number, stage in enumerate(scaled_stages(variant), start=1)
            for repeat in range(stage.repeats)]


def efficientnet_lite_graph(name: str, height: int, width: int):
    """Builds the network once; returns `(images, features, probabilities)` tensors.

    `images`: the `"images"` input, float32 `[B, H, W, 3]` raw RGB 0..255.
    `features`: `{"P3", "P4", "P5"}`, the last block output at stride 8 and 16 and
    the top activation (stride 32, 1280 channels).
    `probabilities`: float32 `[B, 1000]` ImageNet class probabilities (softmax of `_fc`).
    A backbone is `keras.Model(images, features)`; the classifier shares its layers.
    """
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    images = keras.Input(shape=(height, width, 3), dtype="float32", name="images")
    x = keras.layers.Rescaling(1.0 / INPUT_STD_PIXEL, offset=-INPUT_MEAN_PIXEL / INPUT_STD_PIXEL,
                               name="pixel_normalization")(images)
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "stem")
    stride, last_at_stride = 2, {}
    prefixes = iter(block_prefixes(variant))
    for stage in scaled_stages(variant):
        for repeat in range(stage.repeats):
            block_stride = stage.stride if repeat == 0 else 1
            input_channels = stage.input_channels if repeat == 0 else stage.output_channels
            x = _mbconv_block(x, stage, input_channels, block_stride, next(prefixes))
            stride *= block_stride
            last_at_stride[stride] = x
    top = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "top")
    features = dict(zip(FEATURE_LEVELS, (last_at_stride[8], last_at_stride[16], top)))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(top)
    pooled = keras.layers.Dropout(variant.dropout, name="top_dropout")(pooled)
    probabilities = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(pooled)
    return images, features, probabilities


def efficientnet_lite_classifier(name: str, image_size: tuple[int, int] | None = None) -> keras.Model:
    """The whole ImageNet classifier, random init: raw pixels `[B, H, W, 3]` -> `[B, 1000]`.

    `image_size` defaults to the variant's native resolution. Load ImageNet weights with
    `efficientnet_lite_weights.load_imagenet_classifier_weights`.
    """
    side = EFFICIENTNET_LITE_VARIANTS[name].resolution
    height, width = image_size or (side, side)
    images, _, probabilities = efficientnet_lite_graph(name, height, width)
    return keras.Model(images, probabilities, name=f"{name}_classifier")


def _conv_bn_relu6(x, channels: int, kernel: int, stride: int, prefix: str):
    x = keras.layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{prefix}_conv")(x)
    x = _batchnorm(x, f"{prefix}_bn")
    return keras.layers.ReLU(max_value=6.0, name=f"{prefix}_activation")(x)


def _batchnorm(x, name: str):
    return keras.layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, momentum=BATCHNORM_MOMENTUM,
                                           name=name)(x)


def _mbconv_block(x, stage: StageArgs, input_channels: int, stride: int, prefix: str):
    """Inverted residual: 1x1 expand (unless ratio 1), depthwise kxk, 1x1 project, + skip.

    No squeeze-excite, ReLU6; the identity skip only where stride 1 keeps the shape.
    """
    inputs = x
    if stage.expand_ratio != 1:
        x = keras.layers.Conv2D(input_channels * stage.expand_ratio, 1, padding="same", use_bias=False,
                                name=f"{prefix}_expand_conv")(x)
        x = _batchnorm(x, f"{prefix}_expand_bn")
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"{prefix}_dwconv")(x)
    x = _batchnorm(x, f"{prefix}_bn")
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_activation")(x)
    x = keras.layers.Conv2D(stage.output_channels, 1, padding="same", use_bias=False,
                            name=f"{prefix}_project_conv")(x)
    x = _batchnorm(x, f"{prefix}_project_bn")
    if stride == 1 and input_channels == stage.output_channels:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x
