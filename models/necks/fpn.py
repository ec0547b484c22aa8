"""`FeaturePyramid`: the FPN neck (Lin et al. 2017) that gives every level the same width.

    {"P3": [B, H/8, W/8, c3], "P4": [B, H/16, W/16, c4], "P5": [B, H/32, W/32, c5]}
      -> lateral 1x1 convs to `channels`
      -> top-down: each level += nearest-neighbour x2 upsampling of the coarser level's sum
      -> 3x3 output convs
      -> {"P3": [B, H/8, W/8, channels], "P4": [...], "P5": [...]}

The two-stage detector needs it because its RPN head is shared across levels and
RoIAlign pools every RoI into the same `[P, P, channels]` patch, whatever its level.
With a single level it reduces to a 1x1 + 3x3 conv, which still sets the width.
"""

from __future__ import annotations

from typing import Sequence

import keras

from detseg.core.contract import FEATURE_LEVELS
from detseg.models.ops.roi_align import level_number


@keras.saving.register_keras_serializable(package="detseg")
class FeaturePyramid(keras.layers.Layer):
    """Top-down feature pyramid over the levels `levels` (e.g. `("P3", "P4", "P5")`).

    Args:
        levels: level names; consecutive levels must differ by a factor 2 in resolution.
        channels: the width of every output level.
    Input: dict of `[B, h_l, w_l, c_l]`; output: dict of `[B, h_l, w_l, channels]`.
    """

    def __init__(self, levels: Sequence[str] = FEATURE_LEVELS, channels: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.levels = tuple(sorted(levels, key=level_number))
        numbers = [level_number(name) for name in self.levels]
        if any(b - a != 1 for a, b in zip(numbers, numbers[1:])):
            raise ValueError(f"FeaturePyramid: levels must be consecutive, got {self.levels}")
        self.channels = int(channels)
        self.laterals = {name: keras.layers.Conv2D(self.channels, 1, name=f"lateral_{name}")
                         for name in self.levels}
        self.outputs_convs = {name: keras.layers.Conv2D(self.channels, 3, padding="same",
                                                        name=f"output_{name}")
                              for name in self.levels}
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="top_down_upsample")

    def build(self, input_shape):
        for name in self.levels:
            self.laterals[name].build(input_shape[name])
            self.outputs_convs[name].build(tuple(input_shape[name][:-1]) + (self.channels,))
        # No weights, but an unbuilt sublayer would keep the model from counting as built.
        self.upsample.build(tuple(input_shape[self.levels[-1]][:-1]) + (self.channels,))
        self.built = True

    def call(self, features):
        merged = {}
        coarser = None
        for name in reversed(self.levels):
            lateral = self.laterals[name](features[name])
            merged[name] = lateral if coarser is None else lateral + self.upsample(coarser)
            coarser = merged[name]
        return {name: self.outputs_convs[name](merged[name]) for name in self.levels}

    def compute_output_shape(self, input_shape):
        return {name: tuple(input_shape[name][:-1]) + (self.channels,) for name in self.levels}

    def get_config(self):
        return {**super().get_config(), "levels": list(self.levels), "channels": self.channels}
