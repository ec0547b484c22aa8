"""Box head outputs -> final detections: softmax, per-class box decoding, clipping, class-aware NMS.

Each RoI has a probability per object class (background dropped) and its own box per
class. `models.nms.batched_nms` takes one box per row, so the RoIs are expanded to
`R * C` rows, row `(r, c)` holding class c's box and only class c's score; class-aware
NMS then treats each class separately, exactly as per-class boxes require.
"""

from __future__ import annotations

import tensorflow as tf

from detseg.models.ops.box_coding import decode_center_size
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.nms import NmsConfig, batched_nms
from detseg.models.ops.roi_sampling import FASTER_RCNN_VARIANCES


def detect_objects(rois: tf.Tensor, class_logits: tf.Tensor, box_deltas: tf.Tensor,
                   image_size: tuple[int, int], nms: NmsConfig,
                   variances=FASTER_RCNN_VARIANCES) -> dict[str, tf.Tensor]:
    """Final detections of a two-stage detector.

    Args:
        rois: float32 `[B, R, 4]` xyxy px (zero-size rows are padding and never detected).
        class_logits: `[B, R, C + 1]`, background last; box_deltas: `[B, R, C, 4]`.
        image_size: `(H, W)` of the input frame (boxes are clipped to it).
    Returns `batched_nms`'s dict: `boxes [B, K, 4]`, `scores [B, K]`, `classes int32 [B, K]`
    (`detseg.core.contract.PAD_CLASS` on padding), `num_detections int32 [B]`.
    """
    rois = tf.cast(rois, tf.float32)
    probabilities = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., :-1]  # [B, R, C]
    num_classes = tf.shape(probabilities)[-1]
    boxes = decode_center_size(box_deltas, rois[:, :, tf.newaxis, :], variances)        # [B, R, C, 4]
    boxes = clip_boxes(boxes, image_size)
    area = (rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1])
    probabilities = tf.where((area > 0.0)[..., tf.newaxis], probabilities, 0.0)
    batch = tf.shape(rois)[0]
    flat_boxes = tf.reshape(boxes, [batch, -1, 4])                                       # [B, R*C, 4]
    own_class = tf.one_hot(tf.range(num_classes), num_classes)                           # [C, C]
    flat_scores = probabilities[..., tf.newaxis] * own_class                              # [B, R, C, C]
    flat_scores = tf.reshape(flat_scores, [batch, -1, num_classes])
    return batched_nms(flat_boxes, flat_scores, nms)
