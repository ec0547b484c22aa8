"""YOLO losses: classification BCE, GIoU box loss and distribution focal loss (DFL).

All three are sums over points normalized by `sum of target scores` in the batch (at
least 1), as in YOLOv8: a point's weight is its task-aligned target score, so well
aligned positives count most, and an image with no object gives a finite class loss
(every point pushed towards "nothing") and exactly zero box and DFL losses.

- class: binary cross-entropy of every point's C logits against its soft targets
  (`AssignedTargets.scores`), summed over points and classes.
- box: `1 - GIoU(predicted box, assigned box)` per foreground point, times its weight.
- dfl: for each side's target distance t (in strides, clipped to `0..reg_max-1-0.01`),
  cross-entropy towards the two bins around it, weighted by closeness:
  `(ceil - t) * CE(floor) + (t - floor) * CE(ceil)`; averaged over the four sides,
  times the point's weight. Its minimum puts the distribution's mean exactly on t.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.models.ops.box_coding import decode_ltrb, encode_ltrb
from detseg.models.ops.box_ops import giou_loss

DFL_EDGE_MARGIN = 0.01  # keeps t strictly below the last bin, so t's upper bin exists


def dfl_distances(box_distribution, reg_max: int) -> tf.Tensor:
    """`[B, A, 4 * reg_max]` logits -> `[B, A, 4]` expected distances (l, t, r, b) in strides."""
    logits = tf.reshape(tf.cast(box_distribution, tf.float32), tf.concat(
        [tf.shape(box_distribution)[:-1], [4, reg_max]], axis=0))
    bins = tf.range(reg_max, dtype=tf.float32)
    return tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * bins, axis=-1)


def decode_yolo_boxes(box_distribution, points, strides, reg_max: int) -> tf.Tensor:
    """Raw box logits `[B, A, 4 * reg_max]` -> xyxy px `[B, A, 4]` (`points [A, 2]`, `strides [A]`)."""
    return decode_ltrb(dfl_distances(box_distribution, reg_max), points, strides)


def distribution_focal_loss(box_distribution, target_distances, reg_max: int) -> tf.Tensor:
    """Per-point DFL `[B, A]` (mean over the four sides); see the module docstring."""
    logits = tf.reshape(tf.cast(box_distribution, tf.float32), tf.concat(
        [tf.shape(box_distribution)[:-1], [4, reg_max]], axis=0))
    target = tf.clip_by_value(tf.cast(target_distances, tf.float32), 0.0, reg_max - 1 - DFL_EDGE_MARGIN)
    lower = tf.floor(target)
    upper_weight = target - lower
    lower_index = tf.cast(lower, tf.int32)
    ce_lower = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=lower_index, logits=logits)
    ce_upper = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=lower_index + 1, logits=logits)
    return tf.reduce_mean((1.0 - upper_weight) * ce_lower + upper_weight * ce_upper, axis=-1)


def yolo_losses(raw: dict, pred_boxes, targets, points, strides, reg_max: int) -> dict[str, tf.Tensor]:
    """`{"class", "box", "dfl"}` scalar losses of one batch (module docstring).

    Args:
        raw: the network's `{"box_distribution": [B, A, 4R], "class_logits": [B, A, C]}`.
        pred_boxes: `[B, A, 4]` xyxy px, `decode_yolo_boxes` of `raw` (what the assigner saw).
        targets: `models.yolo_assigner.AssignedTargets` for the batch.
        points: `[A, 2]` xy px; strides: `[A]` px.
    """
    class_logits = tf.cast(raw["class_logits"], tf.float32)
    box_distribution = tf.cast(raw["box_distribution"], tf.float32)
    foreground = tf.cast(targets.foreground, tf.float32)
    weight = tf.reduce_sum(targets.scores, axis=-1) * foreground              # [B, A]
    normalizer = tf.maximum(tf.reduce_sum(targets.scores), 1.0)

    class_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=targets.scores, logits=class_logits)) / normalizer

    pred_boxes = tf.cast(pred_boxes, tf.float32)
    # Background rows compare a box with itself (loss 0) so no NaN/Inf can leak through.
    target_boxes = tf.where(targets.foreground[..., tf.newaxis], targets.boxes, pred_boxes)
    box_loss = tf.reduce_sum(giou_loss(target_boxes, pred_boxes) * weight) / normalizer

    target_distances = encode_ltrb(target_boxes, points, strides)
    dfl = distribution_focal_loss(box_distribution, target_distances, reg_max)
    dfl_loss = tf.reduce_sum(dfl * weight) / normalizer
    return {"class": class_loss, "box": box_loss, "dfl": dfl_loss}
