"""The four Faster R-CNN losses, as free functions of predictions and sampled targets.

- `rpn_objectness_loss`: binary cross-entropy over the sampled anchors;
- `rpn_box_loss`: smooth L1 of the deltas of the sampled positive anchors;
- `roi_class_loss`: softmax cross-entropy (C objects + background) over the sampled RoIs;
- `roi_box_loss`: smooth L1 of the ground-truth class's deltas of the positive RoIs.

Every loss is a sum over the batch divided by the number of sampled rows in the batch
(as torchvision does), so an image with no objects gives finite losses and zero box
losses (its sample is all negatives), and an empty sample gives 0, never NaN.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.models.ops.roi_sampling import IGNORE
from detseg.models.rcnn.rpn_targets import RPN_IGNORE, RPN_POSITIVE

RPN_SMOOTH_L1_BETA = 1.0 / 9.0  # torchvision's RPN setting: nearly L1 on small deltas
ROI_SMOOTH_L1_BETA = 1.0


def smooth_l1(difference: tf.Tensor, beta: float) -> tf.Tensor:
    """Elementwise smooth L1: `0.5 x^2 / beta` below `beta`, `|x| - 0.5 beta` above."""
    absolute = tf.abs(difference)
    return tf.where(absolute < beta, 0.5 * tf.square(absolute) / beta, absolute - 0.5 * beta)


def _per_sample(total: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(total, tf.cast(count, tf.float32))


def rpn_objectness_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Scalar: BCE of `logits [B, A]` against `labels int32 [B, A]` (rpn_targets' codes)."""
    sampled = tf.not_equal(labels, RPN_IGNORE)
    truth = tf.cast(tf.equal(labels, RPN_POSITIVE), tf.float32)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=truth, logits=tf.cast(logits, tf.float32))
    total = tf.reduce_sum(tf.where(sampled, losses, 0.0))
    return _per_sample(total, tf.reduce_sum(tf.cast(sampled, tf.int32)))


def rpn_box_loss(deltas: tf.Tensor, box_targets: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Scalar: smooth L1 of `deltas [B, A, 4]` on sampled positives / number of sampled anchors."""
    positive = tf.equal(labels, RPN_POSITIVE)
    per_anchor = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - box_targets, RPN_SMOOTH_L1_BETA), -1)
    total = tf.reduce_sum(tf.where(positive, per_anchor, 0.0))
    return _per_sample(total, tf.reduce_sum(tf.cast(tf.not_equal(labels, RPN_IGNORE), tf.int32)))


def roi_class_loss(class_logits: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """Scalar: mean cross-entropy of `class_logits [B, R, C + 1]` over rows whose
    `classes [B, R]` is not `IGNORE` (object index, or `C` for background)."""
    sampled = tf.not_equal(classes, IGNORE)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(classes, 0), logits=tf.cast(class_logits, tf.float32))
    total = tf.reduce_sum(tf.where(sampled, losses, 0.0))
    return _per_sample(total, tf.reduce_sum(tf.cast(sampled, tf.int32)))


def class_specific(values: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """`values [B, R, C, ...]` -> the row of each RoI's class `[B, R, ...]` (class clamped to 0..C-1)."""
    num_classes = tf.shape(values)[2]
    index = tf.clip_by_value(classes, 0, num_classes - 1)
    return tf.gather(values, index, batch_dims=2)


def roi_box_loss(box_deltas: tf.Tensor, box_targets: tf.Tensor, classes: tf.Tensor,
                 positive: tf.Tensor) -> tf.Tensor:
    """Scalar: smooth L1 of the GT class's deltas (`box_deltas [B, R, C, 4]`) of positive RoIs,
    divided by the number of sampled RoIs."""
    predicted = class_specific(tf.cast(box_deltas, tf.float32), classes)  # [B, R, 4]
    per_roi = tf.reduce_sum(smooth_l1(predicted - box_targets, ROI_SMOOTH_L1_BETA), -1)
    total = tf.reduce_sum(tf.where(positive, per_roi, 0.0))
    return _per_sample(total, tf.reduce_sum(tf.cast(tf.not_equal(classes, IGNORE), tf.int32)))
