"""`BoxHead`: RoI features -> class scores (with background) and class-specific box deltas.

    [B, R, P, P, C] pooled RoI features
      -> flatten -> dense(units, relu) -> dense(units, relu)   ("2fc" head, FPN paper)
      -> dense(C + 1)   class logits; index C (the last) is background
      -> dense(4 C)     deltas of each object class's box w.r.t. the RoI, as `[B, R, C, 4]`

The deltas use `models.roi_sampling.FASTER_RCNN_VARIANCES`. Widths follow from the
number of classes; nothing is a literal.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER


@keras.saving.register_keras_serializable(package="detseg")
class BoxHead(keras.layers.Layer):
    """Two fully connected layers, then classification and per-class box regression.

    Args:
        num_classes: `C` object classes (the background logit is added).
        units: width of the two hidden layers.
        kernel_initializer: of the two hidden layers (`task_model.HEAD_INITIALIZERS`); the
            classifier and regressor start from small normals whatever it is.
    Input `[B, R, P, P, C_feat]`; output `{"class_logits": [B, R, C + 1],
    "box_deltas": [B, R, C, 4]}`, float32.
    """

    def __init__(self, num_classes: int, units: int = 256, kernel_initializer: str = DEFAULT_HEAD_INITIALIZER,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"BoxHead: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.units = int(units)
        self.kernel_initializer = kernel_initializer
        self.hidden1 = keras.layers.Dense(self.units, activation="relu", kernel_initializer=kernel_initializer,
                                          name="box_fc1")
        self.hidden2 = keras.layers.Dense(self.units, activation="relu", kernel_initializer=kernel_initializer,
                                          name="box_fc2")
        self.classifier = keras.layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="box_class_logits")
        self.regressor = keras.layers.Dense(
            4 * self.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_deltas")

    def build(self, input_shape):
        flat = 1
        for dim in input_shape[2:]:
            flat *= int(dim)
        self.hidden1.build((None, flat))
        self.hidden2.build((None, self.units))
        self.classifier.build((None, self.units))
        self.regressor.build((None, self.units))
        self.built = True

    def call(self, pooled):
        batch, rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
        flat_size = 1
        for dim in pooled.shape[2:]:
            flat_size *= int(dim)
        x = tf.reshape(pooled, [-1, flat_size])
        x = self.hidden2(self.hidden1(x))
        logits = tf.reshape(self.classifier(x), [batch, rois, self.num_classes + 1])
        deltas = tf.reshape(self.regressor(x), [batch, rois, self.num_classes, 4])
        return {"class_logits": tf.cast(logits, tf.float32), "box_deltas": tf.cast(deltas, tf.float32)}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "units": self.units,
                "kernel_initializer": self.kernel_initializer}
