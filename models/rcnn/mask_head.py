"""`MaskHead`: a small FCN from RoI features to one mask per class (He et al. 2017).

    [B, M, 14, 14, C_feat] pooled RoI features
      -> `num_convs` x (3x3 conv(channels) + relu)
      -> 2x2 transposed conv, stride 2 (+ relu)          -> 28 x 28
      -> 1x1 conv(num_classes)                           -> logits [B, M, 28, 28, C]

Each class has its own sigmoid mask; the loss and inference read only the channel of
the RoI's class, so classes do not compete for pixels (the paper's key choice).
The output side is twice the pooled side.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER


@keras.saving.register_keras_serializable(package="detseg")
class MaskHead(keras.layers.Layer):
    """Mask FCN over pooled RoI features.

    Args:
        num_classes: `C`, one mask channel per object class.
        channels: width of the convolutions.
        num_convs: 3x3 convolutions before the upsampling (4 in the paper).
        kernel_initializer: of every layer (`task_model.HEAD_INITIALIZERS`).
    Input `[B, M, P, P, C_feat]`; output float32 logits `[B, M, 2P, 2P, C]`.
    """

    def __init__(self, num_classes: int, channels: int = 64, num_convs: int = 2,
                 kernel_initializer: str = DEFAULT_HEAD_INITIALIZER, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_convs = int(num_convs)
        self.kernel_initializer = kernel_initializer
        init = kernel_initializer
        self.convs = [keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", kernel_initializer=init,
                                          name=f"mask_conv{i + 1}") for i in range(self.num_convs)]
        self.upsample = keras.layers.Conv2DTranspose(self.channels, 2, strides=2, activation="relu",
                                                     kernel_initializer=init, name="mask_upsample")
        self.logits = keras.layers.Conv2D(self.num_classes, 1, kernel_initializer=init, name="mask_logits")

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape[2:])
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (self.channels,)
        self.upsample.build(shape)
        side = None if shape[1] is None else 2 * shape[1]
        self.logits.build((None, side, side, self.channels))
        self.built = True

    def call(self, pooled):
        batch, rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
        x = tf.reshape(pooled, tf.concat([[-1], tf.shape(pooled)[2:]], 0))
        x.set_shape([None] + list(pooled.shape[2:]))
        for conv in self.convs:
            x = conv(x)
        logits = self.logits(self.upsample(x))
        side = logits.shape[1]
        return tf.cast(tf.reshape(logits, [batch, rois, side, side, self.num_classes]), tf.float32)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels,
                "num_convs": self.num_convs, "kernel_initializer": self.kernel_initializer}
