"""Balanced sampling of positives and negatives, for RPN anchors and for RoIs.

Two-stage detectors train each stage on a fixed-size, class-balanced sample: the RPN on
256 anchors per image (up to half positive), the box head on e.g. 128 RoIs per image
(up to a quarter positive). Everything here has static shapes and runs in graph mode;
randomness comes from a `keras.random.SeedGenerator`, so `keras.utils.set_random_seed`
makes runs repeatable.

- `balanced_sample_mask`: which candidates are sampled (for the RPN loss, a mask over
  all anchors).
- `sample_rois`: a fixed number `R` of RoIs per image from proposals + ground truth,
  with their classification and box targets (for the box and mask heads).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.ops.box_coding import encode_center_size
from detseg.models.ops.box_ops import pairwise_iou
from detseg.models.ops.matching import IouMatcher, gather_matched, negative_mask, positive_mask

IGNORE = -1  # class/label target of an unsampled row: no loss
FASTER_RCNN_VARIANCES = (0.1, 0.1, 0.2, 0.2)  # = torchvision's box-head weights (10, 10, 5, 5)


def _ranks(scores: tf.Tensor) -> tf.Tensor:
    """int32 `[B, N]`: position of each score in its row sorted descending (0 = largest)."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def balanced_sample_mask(positive: tf.Tensor, negative: tf.Tensor, num_samples: int,
                         positive_fraction: float, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Random positives (at most `num_samples * positive_fraction`) topped up with negatives.

    Args:
        positive, negative: bool `[B, N]`, disjoint candidate sets.
        num_samples: samples per row when enough candidates exist.
        seed: a `keras.random.SeedGenerator` (or int / None) for the random choice.
    Returns bool `(sampled_positive, sampled_negative)`, each `[B, N]`. Rows with too few
    positives take more negatives; rows with too few of both take all they have.
    """
    positive = tf.convert_to_tensor(positive, tf.bool)
    negative = tf.logical_and(tf.convert_to_tensor(negative, tf.bool), tf.logical_not(positive))
    noise = keras.random.uniform(tf.shape(positive), seed=seed)
    max_positives = int(num_samples * positive_fraction)
    num_positives = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=-1), max_positives)
    num_negatives = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32), axis=-1),
                               num_samples - num_positives)
    # Random order among candidates of one kind; non-candidates rank after all of them.
    positive_rank = _ranks(tf.where(positive, noise, -1.0))
    negative_rank = _ranks(tf.where(negative, noise, -1.0))
    sampled_positive = positive & (positive_rank < num_positives[:, tf.newaxis])
    sampled_negative = negative & (negative_rank < num_negatives[:, tf.newaxis])
    return sampled_positive, sampled_negative


def append_ground_truth(proposals: tf.Tensor, gt_boxes: tf.Tensor, gt_valid: tf.Tensor) -> tf.Tensor:
    """Proposals `[B, P, 4]` + ground truth `[B, N, 4]` -> candidates `[B, P + N, 4]`.

    Adding the ground truth gives the box head perfect positives from the first step,
    when the RPN's proposals are still random. Padding rows become zero-size boxes
    (IoU 0 with everything), which `sample_rois` never picks as positives.
    """
    gt = tf.where(gt_valid[..., tf.newaxis], tf.cast(gt_boxes, tf.float32), 0.0)
    return tf.concat([tf.cast(proposals, tf.float32), gt], axis=1)


def sample_rois(proposals: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor, gt_valid: tf.Tensor,
                num_classes: int, num_rois: int, positive_fraction: float = 0.25,
                positive_iou: float = 0.5, negative_iou: float = 0.5, seed=None,
                variances=FASTER_RCNN_VARIANCES) -> dict[str, tf.Tensor]:
    """`num_rois` training RoIs per image with their targets (proposals + GT, balanced).

    Args:
        proposals: float32 `[B, P, 4]` xyxy px (no gradient flows into them).
        gt_boxes, gt_classes, gt_valid: `[B, N, 4]`, int32 `[B, N]`, bool `[B, N]`.
        num_classes: `C`; the background class target is `C` (the box head's last logit).
        positive_iou: IoU with a GT box from which an RoI is that box's positive.
        negative_iou: IoU below which an RoI is background (RoIs in between are unused).
    Returns (rows: sampled positives first, then negatives, then unused rows):
        `"rois"`       float32 `[B, R, 4]`
        `"classes"`    int32 `[B, R]`: class index `0..C-1`, `C` background, `IGNORE` unused
        `"box_targets"` float32 `[B, R, 4]` deltas of the matched GT w.r.t. the RoI
        `"matched_gt"` int32 `[B, R]`: index of the matched GT row (valid for positives)
        `"positive"`   bool `[B, R]`
    """
    candidates = append_ground_truth(proposals, gt_boxes, gt_valid)
    matcher = IouMatcher(positive_iou, negative_iou, force_best_anchor=False)
    matches = matcher(pairwise_iou(gt_boxes, candidates), gt_valid)  # [B, P + N]
    area = (candidates[..., 2] - candidates[..., 0]) * (candidates[..., 3] - candidates[..., 1])
    real = area > 0.0  # zero-size rows are GT padding or collapsed proposals
    positive = real & positive_mask(matches)
    negative = real & negative_mask(matches)
    sampled_pos, sampled_neg = balanced_sample_mask(positive, negative, num_rois, positive_fraction, seed)
    # Keys that put sampled positives first, then sampled negatives, then the rest.
    noise = keras.random.uniform(tf.shape(matches), seed=seed)
    key = tf.where(sampled_pos, 2.0 + noise, tf.where(sampled_neg, 1.0 + noise, noise - 1.0))
    _, picked = tf.math.top_k(key, k=num_rois)
    take = lambda t: tf.gather(t, picked, batch_dims=1)  # noqa: E731
    rois, matches = take(candidates), take(matches)
    is_pos, is_neg = take(sampled_pos), take(sampled_neg)
    matched_classes = gather_matched(tf.cast(gt_classes, tf.int32), matches)
    classes = tf.where(is_pos, matched_classes, tf.where(is_neg, num_classes, IGNORE))
    matched_boxes = gather_matched(tf.cast(gt_boxes, tf.float32), matches)
    box_targets = encode_center_size(matched_boxes, rois, variances)
    box_targets = tf.where(is_pos[..., tf.newaxis], box_targets, 0.0)
    return {"rois": tf.stop_gradient(rois), "classes": classes,
            "box_targets": tf.stop_gradient(box_targets), "matched_gt": tf.maximum(matches, 0), "positive": is_pos}
