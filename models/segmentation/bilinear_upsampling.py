"""Learnable upsampling that starts as bilinear interpolation (the FCN recipe).

A `Conv2DTranspose` with kernel size `2 * factor`, stride `factor` and "same" padding
maps `[B, h, w, C]` to `[B, h * factor, w * factor, C]`. Initialised with
`BilinearUpsampling` (channel `c` in -> channel `c` out, the bilinear "tent" kernel,
zero across channels) it computes exactly the half-pixel-centred bilinear interpolation
of `tf.image.resize(..., "bilinear")` away from the borders; training may then refine it.

Why this kernel: input pixel `i` sits at output coordinate `(i + 0.5) * factor - 0.5`;
output pixel `o` must receive weight `1 - |o - that| / factor` from it. With a kernel of
size `2 * factor` and the `factor // 2` crop that "same" padding applies (even
factors), tap `k` of the kernel lands at `o = i * factor + k - factor // 2`, so tap `k`
must hold `1 - |k - (factor - 0.5)| / factor`: the tent centred at `factor - 0.5`.
Only even factors (and 1) keep that crop exact; odd factors > 1 are refused.

Near the borders a transposed convolution sees only one neighbour instead of two, so
the first and last `factor // 2` output rows/columns are darker than true bilinear
interpolation (their weights sum to less than 1); segmentation logits do not mind.
"""

from __future__ import annotations

import keras
import numpy as np


class UpsamplingFactorError(ValueError):
    """An upsampling factor that a bilinear transposed convolution cannot realise exactly."""


def check_factor(factor: int) -> int:
    """`factor` as an int after checking it is 1 or a positive even number."""
    factor = int(factor)
    if factor < 1 or (factor > 1 and factor % 2):
        raise UpsamplingFactorError(
            f"bilinear upsampling factor must be 1 or a positive even number, got {factor}")
    return factor


def bilinear_taps(factor: int) -> np.ndarray:
    """The 1-D tent: `float32 [2 * factor]`, tap `k` = `1 - |k - (factor - 0.5)| / factor`."""
    factor = check_factor(factor)
    taps = np.arange(2 * factor, dtype=np.float64)
    return (1.0 - np.abs(taps - (factor - 0.5)) / factor).astype(np.float32)


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """The Conv2DTranspose kernel `float32 [2f, 2f, channels, channels]`.

    Keras stores a transposed-convolution kernel as `[kh, kw, out_channels, in_channels]`;
    `kernel[:, :, c, c]` is the outer product of `bilinear_taps(f)` with itself and every
    off-diagonal channel pair is zero, so each channel is upsampled independently.
    """
    taps = bilinear_taps(factor)
    tent = np.outer(taps, taps)
    kernel = np.zeros((tent.shape[0], tent.shape[1], channels, channels), np.float32)
    for channel in range(channels):
        kernel[:, :, channel, channel] = tent
    return kernel


@keras.saving.register_keras_serializable(package="detseg")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initializer for a Conv2DTranspose kernel of shape `[2f, 2f, C, C]` (see `bilinear_kernel`).

    The factor `f` is read from the kernel shape, so one instance serves every layer.
    """

    def __call__(self, shape, dtype=None):
        kernel_h, kernel_w, channels_out, channels_in = (int(side) for side in shape)
        if kernel_h != kernel_w or kernel_h % 2 or channels_out != channels_in:
            raise UpsamplingFactorError(
                f"BilinearUpsampling needs a kernel [2f, 2f, C, C], got shape {tuple(shape)}")
        kernel = bilinear_kernel(kernel_h // 2, channels_out)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


def bilinear_upsampling_layer(factor: int, channels: int, name: str,
                              trainable: bool = True) -> keras.layers.Layer:
    """`[B, h, w, channels] -> [B, h * factor, w * factor, channels]`, bilinear at init.

    `factor == 1` gives an identity `Activation("linear")`, so callers need no special case.
    `trainable=False` keeps the interpolation fixed (FCN's last, largest upsampling).
    """
    factor = check_factor(factor)
    if factor == 1:
        return keras.layers.Activation("linear", name=name)
    return keras.layers.Conv2DTranspose(
        channels, kernel_size=2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsampling(), trainable=trainable, name=name)
