"""The YOLO neck: a path-aggregation feature pyramid (FPN top-down + PAN bottom-up).

    top-down:  T5 = conv1x1(P5);  T4 = csp(concat(up(T5), P4));  N3 = csp(concat(up(T4), P3))
    bottom-up: N4 = csp(concat(down(N3), T4));  N5 = csp(concat(down(N4), T5))

Top-down, each level gets the semantics of the coarser one (upsampled, concatenated,
fused by a CSP block); bottom-up, the fine levels' localization flows back to the coarse
ones through stride-2 convolutions (Liu et al. 2018, PANet; the YOLOv5/v8 layout).

Blocks are conv + BatchNorm + SiLU ("conv_bn_silu") and a cross-stage-partial block
("csp_block", YOLOv8's C2f shape): two 1x1 convs make two half-width branches, `depth`
bottlenecks refine one of them one after the other, and every intermediate result is
concatenated and fused by a final 1x1 conv. Cheap (most work on half the channels) and
keeps gradients short.

Input: a dict of Keras tensors `{"P3", "P4", "P5"}` (strides 8, 16, 32, any channels);
output: `{"P3", "P4", "P5"}` with `widths` channels and the same spatial sizes.
"""

from __future__ import annotations

import keras

from detseg.core.contract import FEATURE_LEVELS

BN_MOMENTUM = 0.97  # BatchNorm statistics follow a short training run quickly
BN_EPSILON = 1e-3


def conv_bn_silu(x, filters: int, kernel_size: int, strides: int = 1, name: str = "conv",
                 kernel_initializer: str = "glorot_uniform"):
    """Conv (no bias) -> BatchNorm -> SiLU: `[B, h, w, c] -> [B, h / strides, w / strides, filters]`."""
    x = keras.layers.Conv2D(int(filters), kernel_size, strides=strides, padding="same",
                            use_bias=False, kernel_initializer=kernel_initializer, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.Activation("silu", name=f"{name}_silu")(x)


def _bottleneck(x, filters: int, shortcut: bool, name: str):
    """Two 3x3 conv_bn_silu, plus the input when `shortcut` (residual)."""
    y = conv_bn_silu(x, filters, 3, name=f"{name}_a")
    y = conv_bn_silu(y, filters, 3, name=f"{name}_b")
    return keras.layers.Add(name=f"{name}_add")([x, y]) if shortcut else y


def csp_block(x, filters: int, depth: int = 1, shortcut: bool = False, name: str = "csp"):
    """Cross-stage-partial block: `[B, h, w, c] -> [B, h, w, filters]` (module docstring)."""
    half = max(int(filters) // 2, 1)
    # Two 1x1 convs rather than one conv and a channel split: same cost, and no Lambda
    # layer (which a `.keras` file can only reload with safe_mode off).
    kept = conv_bn_silu(x, half, 1, name=f"{name}_kept")
    refined = conv_bn_silu(x, half, 1, name=f"{name}_refined")
    parts = [kept, refined]
    for index in range(int(depth)):
        refined = _bottleneck(refined, half, shortcut, name=f"{name}_bottleneck{index}")
        parts.append(refined)
    merged = keras.layers.Concatenate(name=f"{name}_concat")(parts)
    return conv_bn_silu(merged, filters, 1, name=f"{name}_fuse")


def _upsample(x, name: str):
    return keras.layers.UpSampling2D(2, interpolation="nearest", name=name)(x)


def build_pan_fpn(features: dict, widths=(64, 128, 256), depth: int = 1, name: str = "neck") -> dict:
    """PAN-FPN on Keras tensors `{"P3", "P4", "P5"}` -> `{"P3", "P4", "P5"}` with `widths` channels.

    Sizes must halve from level to level (true for H, W multiples of 32).
    """
    w3, w4, w5 = (int(w) for w in widths)
    p3, p4, p5 = (features[level] for level in FEATURE_LEVELS)
    lateral5 = conv_bn_silu(p5, w5, 1, name=f"{name}_lateral5")
    # Top-down: semantics from coarse to fine.
    top4 = keras.layers.Concatenate(name=f"{name}_td4_merge")([_upsample(lateral5, f"{name}_td4_up"), p4])
    top4 = csp_block(top4, w4, depth, name=f"{name}_td4")
    top3 = keras.layers.Concatenate(name=f"{name}_td3_merge")([_upsample(top4, f"{name}_td3_up"), p3])
    out3 = csp_block(top3, w3, depth, name=f"{name}_out3")
    # Bottom-up: precise localization from fine to coarse.
    down4 = conv_bn_silu(out3, w3, 3, strides=2, name=f"{name}_bu4_down")
    out4 = csp_block(keras.layers.Concatenate(name=f"{name}_bu4_merge")([down4, top4]), w4, depth,
                     name=f"{name}_out4")
    down5 = conv_bn_silu(out4, w4, 3, strides=2, name=f"{name}_bu5_down")
    out5 = csp_block(keras.layers.Concatenate(name=f"{name}_bu5_merge")([down5, lateral5]), w5, depth,
                     name=f"{name}_out5")
    return {"P3": out3, "P4": out4, "P5": out5}
