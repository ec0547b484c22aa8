"""Mask R-CNN training: mask targets cropped from the ground truth, and the mask loss.

A positive RoI's target is its matched ground-truth mask, sampled inside the RoI on the
head's output grid (`28 x 28` cell centres, `models.roi_align.crop_and_resize_aligned`
at stride 1) and thresholded at 0.5. The loss is the mean per-pixel binary
cross-entropy of the GT class's channel only, over positive RoIs; with no positive RoI
in the batch it is 0.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.models.rcnn.losses import class_specific
from detseg.models.ops.roi_align import crop_and_resize_aligned

MASK_TARGET_THRESHOLD = 0.5  # a resampled ground-truth pixel at or above this is foreground


def mask_targets(gt_masks: tf.Tensor, matched_gt: tf.Tensor, rois: tf.Tensor, size: int) -> tf.Tensor:
    """Ground-truth masks cropped to their RoIs.

    Args:
        gt_masks: uint8 `[B, N, H, W]` 0/1 masks in the input frame (batch contract).
        matched_gt: int32 `[B, M]`, the GT row of each RoI.
        rois: float32 `[B, M, 4]` xyxy px.
        size: target side (the mask head's output side, e.g. 28).
    Returns float32 `[B, M, size, size]` of 0/1.
    """
    shape = tf.shape(gt_masks)
    batch, objects = shape[0], shape[1]
    images = tf.reshape(tf.cast(gt_masks, tf.float32), tf.concat([[-1], shape[2:], [1]], 0))
    # Which of the B*N flattened masks each RoI reads.
    mask_index = tf.range(batch)[:, tf.newaxis] * objects + tf.cast(matched_gt, tf.int32)
    crops = crop_and_resize_aligned(images, tf.reshape(rois, [-1, 4]), tf.reshape(mask_index, [-1]),
                                    1.0, size)
    targets = tf.cast(crops[..., 0] >= MASK_TARGET_THRESHOLD, tf.float32)
    return tf.reshape(targets, [batch, -1, size, size])


def mask_loss(mask_logits: tf.Tensor, targets: tf.Tensor, classes: tf.Tensor,
              positive: tf.Tensor) -> tf.Tensor:
    """Scalar mean BCE of the class channel of `mask_logits [B, M, S, S, C]` against
    `targets [B, M, S, S]`, over RoIs where `positive [B, M]`; `classes int32 [B, M]`."""
    per_class_first = tf.transpose(mask_logits, [0, 1, 4, 2, 3])  # [B, M, C, S, S]
    logits = class_specific(per_class_first, classes)             # [B, M, S, S]
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    per_roi = tf.reduce_mean(losses, axis=[2, 3])
    total = tf.reduce_sum(tf.where(positive, per_roi, 0.0))
    return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(positive, tf.float32)))
