"""SSD targets and losses: IoU matching, smooth L1 on box deltas, hard negative mining.

Targets (`ssd_targets`): default boxes are matched to ground truth by
`models.matching.IouMatcher`; a positive box learns its object's class (`c + 1`) and the
center-size deltas to its box, a negative learns background (`SSD_BACKGROUND`), an
ignored one (between the IoU thresholds) learns nothing.

Losses (`ssd_losses`), both normalized by the number of positives in the batch (at
least 1), as in Liu et al. (2016):
- box: smooth L1 (Huber, delta 1) of the four deltas, summed, over positives only;
- class: softmax cross-entropy over positives plus the hardest negatives: per image, the
  `negatives_per_positive x positives` (at least `min_negatives`) negative boxes with the
  highest cross-entropy. Mining keeps the ~99% easy background boxes from swamping the loss.

An image without objects has zero box loss and a class loss from its `min_negatives`
hardest background boxes only: finite, and it still teaches "nothing here".
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detseg.models.ops.box_coding import encode_center_size
from detseg.models.ops.box_ops import pairwise_iou
from detseg.models.ops.matching import (IouMatcher, gather_matched, negative_mask, positive_mask,
                                        valid_ground_truth)
from detseg.models.ssd.head import SSD_BACKGROUND

SMOOTH_L1_DELTA = 1.0


@dataclass(frozen=True)
class SsdTargets:
    """Per default box: `classes int32 [B, A]` (0 background, c + 1 class c; meaningless where
    ignored), `deltas float32 [B, A, 4]` (zeros unless positive), `positive` and `negative`
    bool `[B, A]` (neither: ignored)."""

    classes: tf.Tensor
    deltas: tf.Tensor
    positive: tf.Tensor
    negative: tf.Tensor


def ssd_targets(anchors, gt_boxes, gt_classes, matcher: IouMatcher, variances) -> SsdTargets:
    """Targets for `anchors [A, 4]` xyxy px from `gt_boxes [B, G, 4]`, `gt_classes [B, G]` (padded -1)."""
    anchors = tf.cast(anchors, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    iou = pairwise_iou(gt_boxes, anchors[tf.newaxis])                        # [B, G, A]
    matches = matcher(iou, valid_ground_truth(gt_classes))                    # [B, A]
    positive = positive_mask(matches)
    matched_boxes = gather_matched(gt_boxes, matches)
    deltas = tf.where(positive[..., tf.newaxis],
                      encode_center_size(matched_boxes, anchors[tf.newaxis], variances), 0.0)
    classes = tf.where(positive, gather_matched(gt_classes, matches) + 1, SSD_BACKGROUND)
    return SsdTargets(tf.stop_gradient(classes), tf.stop_gradient(deltas), positive, negative_mask(matches))


def hard_negatives(class_loss, negative, num_positive, negatives_per_positive: float,
                   min_negatives: int) -> tf.Tensor:
    """bool `[B, A]`: per image the `max(ratio * positives, min_negatives)` negatives of highest loss."""
    wanted = tf.maximum(tf.cast(tf.cast(num_positive, tf.float32) * negatives_per_positive, tf.int32),
                        int(min_negatives))                                   # [B]
    candidate_loss = tf.where(negative, tf.stop_gradient(class_loss), -1.0)  # CE >= 0 > -1
    order = tf.argsort(candidate_loss, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=-1, stable=True)                          # rank of each box
    return negative & (rank < wanted[:, tf.newaxis])


def _smooth_l1(difference):
    absolute = tf.abs(difference)
    return tf.where(absolute < SMOOTH_L1_DELTA, 0.5 * tf.square(difference) / SMOOTH_L1_DELTA,
                    absolute - 0.5 * SMOOTH_L1_DELTA)


def ssd_losses(raw: dict, targets: SsdTargets, negatives_per_positive: float = 3.0,
               min_negatives: int = 4) -> dict[str, tf.Tensor]:
    """`{"class", "box", "num_positive"}` of one batch (module docstring); losses are scalars."""
    logits = tf.cast(raw["class_logits"], tf.float32)
    deltas = tf.cast(raw["box_deltas"], tf.float32)
    positive = tf.cast(targets.positive, tf.float32)
    num_positive = tf.reduce_sum(positive, axis=-1)                           # [B]
    normalizer = tf.maximum(tf.reduce_sum(num_positive), 1.0)

    class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets.classes, logits=logits)
    mined = hard_negatives(class_loss, targets.negative, num_positive, negatives_per_positive, min_negatives)
    counted = tf.cast(targets.positive | mined, tf.float32)
    class_total = tf.reduce_sum(class_loss * counted) / normalizer

    box_error = tf.reduce_sum(_smooth_l1(deltas - targets.deltas), axis=-1)   # [B, A]
    box_total = tf.reduce_sum(box_error * positive) / normalizer
    return {"class": class_total, "box": box_total, "num_positive": tf.reduce_sum(num_positive)}
