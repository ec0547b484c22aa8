"""`RPNHead`: objectness logits and box deltas for every anchor of every pyramid level.

Per level (weights shared across levels, Ren et al. 2015 / FPN):

    [B, h, w, C] -> 3x3 conv(C, relu) -> 1x1 conv(A)   objectness logits
                                      -> 1x1 conv(4A)  box deltas (encoded like the anchors' targets)

`A` is the number of anchors per feature-map cell (scales x aspect ratios), so the head's
widths follow from the anchor configuration, never from literals.

Outputs are flattened and concatenated level by level (ascending level), each level in
row-major cell order and, within a cell, anchor order: the same order as
`models.anchors` lays the anchors out, so row `i` of the outputs belongs to anchor `i`.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from detseg.core.contract import FEATURE_LEVELS
from detseg.models.ops.roi_align import level_number


@keras.saving.register_keras_serializable(package="detseg")
class RPNHead(keras.layers.Layer):
    """Shared RPN head over the levels `levels`.

    Args:
        levels: level names, e.g. `("P3", "P4", "P5")`.
        anchors_per_cell: `A`, anchors per feature-map cell.
        channels: width of the shared 3x3 conv.
    Input: dict `{level: [B, h_l, w_l, C]}`. Output: `{"objectness": [B, N] logits,
    "deltas": [B, N, 4]}` with `N = sum_l h_l * w_l * A`, float32.
    """

    def __init__(self, levels: Sequence[str] = FEATURE_LEVELS, anchors_per_cell: int = 3,
                 channels: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.levels = tuple(sorted(levels, key=level_number))
        self.anchors_per_cell = int(anchors_per_cell)
        self.channels = int(channels)
        small = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu",
                                        kernel_initializer=small, name="rpn_conv")
        self.objectness = keras.layers.Conv2D(self.anchors_per_cell, 1, kernel_initializer=small,
                                              name="rpn_objectness")
        self.deltas = keras.layers.Conv2D(4 * self.anchors_per_cell, 1, kernel_initializer=small,
                                          name="rpn_deltas")

    def build(self, input_shape):
        shape = tuple(input_shape[self.levels[0]])
        self.conv.build(shape)
        hidden = shape[:-1] + (self.channels,)
        self.objectness.build(hidden)
        self.deltas.build(hidden)
        self.built = True

    def call(self, features):
        logits, deltas = [], []
        for name in self.levels:
            hidden = self.conv(features[name])
            batch = tf.shape(hidden)[0]
            logits.append(tf.reshape(self.objectness(hidden), [batch, -1]))
            deltas.append(tf.reshape(self.deltas(hidden), [batch, -1, 4]))
        return {"objectness": tf.cast(tf.concat(logits, axis=1), tf.float32),
                "deltas": tf.cast(tf.concat(deltas, axis=1), tf.float32)}

    def get_config(self):
        return {**super().get_config(), "levels": list(self.levels),
                "anchors_per_cell": self.anchors_per_cell, "channels": self.channels}
