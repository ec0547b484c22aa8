"""Task-aligned assignment (TOOD, Feng et al. 2021; the YOLOv8 assigner).

Which grid points learn which object is decided from the model's CURRENT predictions:
for a ground-truth box g and a point a inside it,

    alignment(g, a) = score(a, class of g) ** alpha * IoU(g, predicted box of a) ** beta

and each box takes the `topk` points with the highest alignment. A point claimed by
several boxes keeps the one its predicted box overlaps most. Points that predict the
right class AND a good box are the ones trained as positives, so classification and
localization learn to agree (the score a positive is trained towards is its
localization quality, not 1):

    target score(a) = alignment(g, a) / max_a' alignment(g, a') * max_a' IoU(g, a')

(a' over g's chosen points), i.e. the best point of each box is trained towards that
box's best IoU and the others proportionally less.

Shapes: B images, A points, G ground-truth rows (padding rows have `PAD_CLASS`), C classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detseg.models.ops.box_ops import pairwise_iou
from detseg.core.contract import PAD_CLASS
from detseg.models.ops.matching import gather_matched, valid_ground_truth

ALIGNMENT_EPSILON = 1e-9  # keeps the normalization finite for boxes with no candidate


@dataclass(frozen=True)
class AssignedTargets:
    """Per-point targets, all stop-gradient.

    - `boxes`: float32 `[B, A, 4]` xyxy px of the assigned box (zeros where background);
    - `scores`: float32 `[B, A, C]` soft class targets (one-hot x target score; zeros on
      background);
    - `foreground`: bool `[B, A]`;
    - `gt_index`: int32 `[B, A]` row of the assigned box, -1 on background.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    foreground: tf.Tensor
    gt_index: tf.Tensor


def points_inside_boxes(points, gt_boxes) -> tf.Tensor:
    """bool `[B, G, A]`: point a strictly inside box g. `points [A, 2]` xy, `gt_boxes [B, G, 4]` xyxy."""
    x = points[tf.newaxis, tf.newaxis, :, 0]
    y = points[tf.newaxis, tf.newaxis, :, 1]
    x0, y0, x1, y1 = (gt_boxes[..., i:i + 1] for i in range(4))
    return (x > x0) & (x < x1) & (y > y0) & (y < y1)


def _with_padding_row(gt_boxes, gt_classes) -> tuple[tf.Tensor, tf.Tensor]:
    """Appends one padding row, so that reductions over G are defined even when G == 0."""
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    batch = tf.shape(gt_classes)[0]
    pad_class = tf.fill([batch, 1], PAD_CLASS)
    return (tf.concat([gt_boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1),
            tf.concat([gt_classes, pad_class], axis=1))


def _without_padding_rows(gt_boxes, gt_classes) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The rows of every image with its real objects first, cut to the batch's largest object
    count: `(boxes [B, G', 4], classes [B, G'], order [B, G'])`, `order` the original row of
    each kept row. The pipeline pads every image to a fixed row count (50) while images hold
    a few objects; every `[B, G, A]` tensor of the assignment shrinks with G."""
    valid = valid_ground_truth(gt_classes)
    order = tf.argsort(tf.cast(~valid, tf.int32), axis=1, stable=True)        # real rows first, in order
    kept = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))
    order = order[:, :kept]
    return (tf.gather(gt_boxes, order, batch_dims=1), tf.gather(gt_classes, order, batch_dims=1), order)


def _top_k_mask(alignment: tf.Tensor, topk: int) -> tf.Tensor:
    """bool `[B, G, A]`: the `topk` highest positive alignments of each box.

    Uses the k-th value as a threshold (memory O(B G A) instead of a one-hot per pick);
    exact ties at the threshold may admit a few more than k points.
    """
    k = min(int(topk), int(alignment.shape[-1]))
    kth = tf.math.top_k(alignment, k=k, sorted=True).values[..., -1:]
    # Strictly positive only: IoU ** 6 of an untrained head is tiny but must still count.
    return (alignment >= kth) & (alignment > 0.0)


def task_aligned_assign(class_probs, pred_boxes, points, gt_boxes, gt_classes, topk: int = 10,
                        alpha: float = 0.5, beta: float = 6.0) -> AssignedTargets:
    """Targets for every point (module docstring).

    Args:
        class_probs: float `[B, A, C]` predicted probabilities (sigmoid).
        pred_boxes: float `[B, A, 4]` predicted xyxy px.
        points: float `[A, 2]` xy px of the grid points (`models.anchors.grid_points`).
        gt_boxes: float `[B, G, 4]` xyxy px; gt_classes: int `[B, G]`, `PAD_CLASS` on padding.
        topk, alpha, beta: as in the module docstring (YOLOv8: 10, 0.5, 6.0).
    """
    class_probs = tf.stop_gradient(tf.cast(class_probs, tf.float32))
    pred_boxes = tf.stop_gradient(tf.cast(pred_boxes, tf.float32))
    points = tf.cast(points, tf.float32)
    gt_boxes, gt_classes, original_row = _without_padding_rows(tf.cast(gt_boxes, tf.float32),
                                                               tf.cast(gt_classes, tf.int32))
    gt_boxes, gt_classes = _with_padding_row(gt_boxes, gt_classes)
    num_classes = tf.shape(class_probs)[-1]
    num_gt = tf.shape(gt_classes)[1]

    valid = valid_ground_truth(gt_classes)                                        # [B, G]
    candidates_allowed = points_inside_boxes(points, gt_boxes) & valid[..., tf.newaxis]
    iou = pairwise_iou(gt_boxes, pred_boxes)                                      # [B, G, A]
    probs_by_class = tf.transpose(class_probs, [0, 2, 1])                         # [B, C, A]
    score = tf.gather(probs_by_class, tf.maximum(gt_classes, 0), batch_dims=1)   # [B, G, A]
    alignment = tf.pow(score, alpha) * tf.pow(iou, beta)
    alignment = tf.where(candidates_allowed, alignment, 0.0)
    chosen = _top_k_mask(alignment, topk) & candidates_allowed                   # [B, G, A]

    # A point chosen by several boxes keeps the one with the highest IoU.
    chosen_iou = tf.where(chosen, iou, -1.0)
    foreground = tf.reduce_any(chosen, axis=1)                                    # [B, A]
    gt_index = tf.argmax(chosen_iou, axis=1, output_type=tf.int32)              # [B, A]
    owner = tf.equal(tf.range(num_gt)[tf.newaxis, :, tf.newaxis], gt_index[:, tf.newaxis, :]) & chosen

    owned_alignment = tf.where(owner, alignment, 0.0)
    owned_iou = tf.where(owner, iou, 0.0)
    best_alignment = tf.reduce_max(owned_alignment, axis=-1, keepdims=True)      # [B, G, 1]
    best_iou = tf.reduce_max(owned_iou, axis=-1, keepdims=True)
    normalized = owned_alignment / (best_alignment + ALIGNMENT_EPSILON) * best_iou
    target_score = tf.reduce_max(normalized, axis=1)                              # [B, A]

    target_class = tf.where(foreground, gather_matched(gt_classes, gt_index), -1)
    scores = tf.one_hot(target_class, num_classes, dtype=tf.float32) * target_score[..., tf.newaxis]
    boxes = tf.where(foreground[..., tf.newaxis], gather_matched(gt_boxes, gt_index), 0.0)
    # Back to the caller's rows; the appended padding row maps to -1.
    original_row = tf.concat([original_row, tf.fill([tf.shape(original_row)[0], 1], -1)], axis=1)
    gt_index = tf.gather(original_row, gt_index, batch_dims=1)
    return AssignedTargets(boxes=tf.stop_gradient(boxes), scores=tf.stop_gradient(scores),
                           foreground=foreground, gt_index=tf.where(foreground, gt_index, -1))
