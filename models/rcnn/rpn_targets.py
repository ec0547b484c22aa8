"""RPN training targets: which anchors are objects, which are background, and their deltas.

Anchors are matched to ground truth by IoU (`models.matching.IouMatcher`: positive at
>= 0.7, negative below 0.3, in between ignored, every box also gets its best anchor), then
`models.roi_sampling.balanced_sample_mask` keeps a random sample of e.g. 256 anchors per
image with at most half positive (Ren et al. 2015). Only sampled anchors take part in
the objectness loss; only sampled positives in the box loss.

Label codes of `objectness` (named, never bare numbers in logic):
    `RPN_POSITIVE` (1): an object; `RPN_NEGATIVE` (0): background; `RPN_IGNORE` (-1): no loss.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.models.ops.box_coding import encode_center_size
from detseg.models.ops.box_ops import pairwise_iou
from detseg.models.ops.matching import IouMatcher, gather_matched, negative_mask, positive_mask
from detseg.models.ops.roi_sampling import balanced_sample_mask

RPN_POSITIVE = 1
RPN_NEGATIVE = 0
RPN_IGNORE = -1
RPN_VARIANCES = (1.0, 1.0, 1.0, 1.0)  # torchvision's RPN box coder weights are all 1


def rpn_targets(anchors: tf.Tensor, gt_boxes: tf.Tensor, gt_valid: tf.Tensor, num_samples: int = 256,
                positive_fraction: float = 0.5, positive_iou: float = 0.7, negative_iou: float = 0.3,
                seed=None, variances=RPN_VARIANCES) -> dict[str, tf.Tensor]:
    """Sampled objectness labels and box targets for every anchor.

    Args:
        anchors: float32 `[A, 4]` xyxy px (`models.anchors.AnchorGenerator`'s order).
        gt_boxes: float32 `[B, N, 4]` xyxy px; gt_valid: bool `[B, N]` (False = padding).
        num_samples, positive_fraction: anchors sampled per image, and the positive share cap.
    Returns:
        `"objectness"`: int32 `[B, A]` of `RPN_POSITIVE` / `RPN_NEGATIVE` / `RPN_IGNORE`;
        `"box_targets"`: float32 `[B, A, 4]` deltas of the matched box (zeros off positives).
    An image without objects gets only negatives (finite losses, no box loss).
    """
    anchors = tf.cast(anchors, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    matcher = IouMatcher(positive_iou, negative_iou, force_best_anchor=True)
    matches = matcher(pairwise_iou(gt_boxes, anchors[tf.newaxis]), gt_valid)  # [B, A]
    sampled_pos, sampled_neg = balanced_sample_mask(positive_mask(matches), negative_mask(matches),
                                                    num_samples, positive_fraction, seed)
    objectness = tf.where(sampled_pos, RPN_POSITIVE, tf.where(sampled_neg, RPN_NEGATIVE, RPN_IGNORE))
    matched_boxes = gather_matched(gt_boxes, matches)
    box_targets = encode_center_size(matched_boxes, anchors[tf.newaxis], variances)
    box_targets = tf.where(positive_mask(matches)[..., tf.newaxis], box_targets, 0.0)
    return {"objectness": tf.cast(objectness, tf.int32), "box_targets": box_targets}
