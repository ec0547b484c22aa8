"""Matching priors (anchor boxes) to ground-truth boxes by IoU, with named label codes.

A match result is int32 `[..., A]`, one entry per anchor:
- `>= 0`: the index of the ground-truth box the anchor is matched to (a POSITIVE anchor);
- `MATCH_NEGATIVE` (-1): background; the classifier learns "no object" here;
- `MATCH_IGNORE` (-2): in between the thresholds; no loss at all.

Ground truth comes padded, as in the batch contract: `classes int32 [B, G]` with
`PAD_CLASS` on padding rows (their boxes are ignored whatever they hold).

Used by SSD (positive >= 0.5, negative < 0.5, every box forced onto its best anchor),
and general enough for an RPN (0.7 / 0.3) or a RetinaNet (0.5 / 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detseg.core.contract import PAD_CLASS

MATCH_NEGATIVE = -1  # anchor matched to background
MATCH_IGNORE = -2    # anchor takes part in no loss


class MatchingError(ValueError):
    """Thresholds that cannot split anchors into positive / ignore / negative."""


def valid_ground_truth(classes) -> tf.Tensor:
    """bool `[..., G]`: True for real objects, False for padding rows (`PAD_CLASS`)."""
    return tf.cast(classes, tf.int32) > PAD_CLASS


@dataclass(frozen=True)
class IouMatcher:
    """Matches each anchor to the ground-truth box it overlaps most.

    Args:
        positive_threshold: best IoU at or above which an anchor is positive.
        negative_threshold: best IoU below which an anchor is negative; anchors in
            `[negative_threshold, positive_threshold)` are `MATCH_IGNORE`. Equal
            thresholds mean no anchor is ignored.
        force_best_anchor: every real box also gets its single best anchor (its IoU with
            it > 0), even below `positive_threshold`, so no object goes without a
            positive. When two boxes force the same anchor, the one with the higher IoU wins.

    `matcher(iou, gt_valid)`: `iou float [..., G, A]` (ground truth x anchors,
    e.g. `box_ops.pairwise_iou(gt_boxes, anchors)`), `gt_valid bool [..., G]` ->
    int32 `[..., A]` matches (module docstring). With no real box every anchor is negative.
    """

    positive_threshold: float = 0.5
    negative_threshold: float = 0.5
    force_best_anchor: bool = True

    def __post_init__(self):
        if not 0.0 <= self.negative_threshold <= self.positive_threshold <= 1.0:
            raise MatchingError(
                f"IouMatcher needs 0 <= negative_threshold <= positive_threshold <= 1, got "
                f"{self.negative_threshold} and {self.positive_threshold}")

    def __call__(self, iou, gt_valid) -> tf.Tensor:
        iou = tf.cast(iou, tf.float32)
        gt_valid = tf.cast(gt_valid, tf.bool)
        # Padding rows get IoU -1: below every threshold, never a best match.
        iou = tf.where(gt_valid[..., tf.newaxis], iou, -1.0)
        iou = _with_one_row_at_least(iou)
        best_iou = tf.reduce_max(iou, axis=-2)                          # [..., A]
        best_gt = tf.argmax(iou, axis=-2, output_type=tf.int32)        # [..., A]
        matches = tf.where(best_iou >= self.positive_threshold, best_gt,
                           tf.where(best_iou < self.negative_threshold, MATCH_NEGATIVE, MATCH_IGNORE))
        if self.force_best_anchor:
            forced, forced_gt = _forced_matches(iou)
            matches = tf.where(forced, forced_gt, matches)
        return matches


def _with_one_row_at_least(iou: tf.Tensor) -> tf.Tensor:
    """Appends a row of IoU -1 (a padding box), so max/argmax over G are defined when G == 0."""
    shape = tf.shape(iou)
    padding_row = -tf.ones(tf.concat([shape[:-2], [1], shape[-1:]], axis=0), iou.dtype)
    return tf.concat([iou, padding_row], axis=-2)


def _forced_matches(iou: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(forced bool [..., A], gt int32 [..., A])`: anchors that are some box's best anchor."""
    num_anchors = tf.shape(iou)[-1]
    best_anchor = tf.argmax(iou, axis=-1, output_type=tf.int32)        # [..., G]
    has_overlap = tf.reduce_max(iou, axis=-1) > 0.0                     # [..., G]; padding: -1
    claims = tf.equal(best_anchor[..., tf.newaxis], tf.range(num_anchors))  # [..., G, A]
    claims = tf.logical_and(claims, has_overlap[..., tf.newaxis])
    claimed_iou = tf.where(claims, iou, -1.0)
    forced = tf.reduce_any(claims, axis=-2)
    return forced, tf.argmax(claimed_iou, axis=-2, output_type=tf.int32)


def gather_matched(values, matches) -> tf.Tensor:
    """Per-anchor values of the matched box: `values [B, G, ...]`, `matches [B, A]` -> `[B, A, ...]`.

    Rows of unmatched anchors (negative / ignore) hold box 0's values: mask them with
    `matches >= 0`. Works for G == 0 too (all rows zeros).
    """
    values = tf.convert_to_tensor(values)
    shape = tf.shape(values)
    zero_row = tf.zeros(tf.concat([shape[:1], [1], shape[2:]], axis=0), values.dtype)
    padded = tf.concat([values, zero_row], axis=1)  # so that G == 0 still has a row to gather
    index = tf.maximum(tf.cast(matches, tf.int32), 0)
    return tf.gather(padded, index, batch_dims=1)


def positive_mask(matches) -> tf.Tensor:
    """bool `[..., A]`: anchors matched to a box."""
    return tf.cast(matches, tf.int32) >= 0


def negative_mask(matches) -> tf.Tensor:
    """bool `[..., A]`: background anchors (`MATCH_NEGATIVE`)."""
    return tf.equal(tf.cast(matches, tf.int32), MATCH_NEGATIVE)
