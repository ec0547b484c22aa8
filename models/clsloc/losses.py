"""Losses and per-image scores of the classification + localization task.

All functions take one object per image: class indices int `[B]`, class probabilities
`[B, C]` and xyxy boxes `[B, 4]`, and return per-image values `[B]`; the task model
(models/classification_localization.py) averages them over the batch.

Box losses compare boxes NORMALIZED to the input frame (coordinates divided by the
image width/height, so 0..1): the loss then does not depend on the image size, and
the smooth-L1 transition point `delta` is a fraction of the frame.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.core.contract import PAD_CLASS
from detseg.models.ops.box_ops import elementwise_iou, giou_loss

SMOOTH_L1 = "smooth_l1"
GIOU = "giou"
BOX_LOSSES = (SMOOTH_L1, GIOU)
# The class code of an image that has no object to classify and localize: the padding
# class code of the contract. Such images count in neither the losses nor the metrics.
NO_OBJECT = PAD_CLASS
# IoU from which a box counts as localized (PASCAL VOC convention).
LOCALIZATION_IOU_THRESHOLD = 0.5
_PROBABILITY_FLOOR = 1e-7


def classification_loss(class_true, class_probs):
    """Cross-entropy `[B]` of int labels `[B]` against probabilities `[B, C]`.

    `NO_OBJECT` labels give 0 (mask them out of the mean with `object_mask`).
    """
    labels = tf.maximum(tf.cast(class_true, tf.int32), 0)
    probs = tf.clip_by_value(tf.cast(class_probs, tf.float32), _PROBABILITY_FLOOR, 1.0)
    picked = tf.gather(probs, labels, axis=-1, batch_dims=1)
    return tf.where(object_mask(class_true) > 0, -tf.math.log(picked), 0.0)


def smooth_l1_loss(box_true, box_pred, delta: float):
    """Smooth L1 `[B]`, summed over the 4 coordinates of `[B, 4]` boxes.

    Per coordinate: `0.5 d^2 / delta` when `|d| < delta`, else `|d| - 0.5 delta` (the
    Fast R-CNN form: quadratic near 0, gradient magnitude 1 beyond `delta`).
    """
    difference = tf.abs(tf.cast(box_pred, tf.float32) - tf.cast(box_true, tf.float32))
    per_coordinate = tf.where(difference < delta, 0.5 * tf.square(difference) / delta,
                              difference - 0.5 * delta)
    return tf.reduce_sum(per_coordinate, axis=-1)


def box_regression_loss(kind: str, box_true, box_pred, smooth_l1_delta: float):
    """`[B]` loss between normalized xyxy boxes `[B, 4]`: `smooth_l1` or `giou` (1 - GIoU)."""
    if kind == SMOOTH_L1:
        return smooth_l1_loss(box_true, box_pred, smooth_l1_delta)
    if kind == GIOU:
        return giou_loss(tf.cast(box_true, tf.float32), tf.cast(box_pred, tf.float32))
    raise ValueError(f"unknown box loss {kind!r}; expected one of {BOX_LOSSES}")


def object_mask(class_true):
    """float32 `[B]`: 1 for images with an object, 0 for `NO_OBJECT` images."""
    return tf.cast(tf.not_equal(tf.cast(class_true, tf.int32), NO_OBJECT), tf.float32)


def class_hits(class_true, class_probs):
    """float32 `[B]`: 1 where the most probable class is the true class."""
    predicted = tf.argmax(class_probs, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, tf.cast(class_true, tf.int32)), tf.float32)


def box_ious(box_true, box_pred):
    """float32 `[B]`: IoU of each predicted box with its true box (any common frame)."""
    return elementwise_iou(tf.cast(box_true, tf.float32), tf.cast(box_pred, tf.float32))


def localization_hits(class_true, class_probs, box_true, box_pred,
                      iou_threshold: float = LOCALIZATION_IOU_THRESHOLD):
    """float32 `[B]`: 1 where the class is right AND the box IoU is >= `iou_threshold`."""
    localized = tf.cast(box_ious(box_true, box_pred) >= iou_threshold, tf.float32)
    return class_hits(class_true, class_probs) * localized

