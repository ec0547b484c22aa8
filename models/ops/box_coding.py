"""Box coding: boxes <-> regression targets relative to priors (anchor boxes or points).

Two codings, each an exact inverse pair (up to float rounding and the clamp on decode):

- center-size deltas (SSD, Faster R-CNN, RetinaNet), relative to anchor BOXES:
      dx = (cx - cx_a) / w_a / v0      dy = (cy - cy_a) / h_a / v1
      dw = log(w / w_a) / v2           dh = log(h / h_a) / v3
  with `variances = (v0, v1, v2, v3)`. SSD's variances (0.1, 0.1, 0.2, 0.2) are the
  inverse of Faster R-CNN's "weights" (10, 10, 5, 5): both scale the targets to about
  unit variance.
- ltrb distances (YOLOv8, FCOS), relative to anchor POINTS:
      (l, t, r, b) = (x - x0, y - y0, x1 - x, y1 - y) / stride
  i.e. the distances from the point to the box's left, top, right and bottom edges, in
  units of the point's feature-map stride. A point inside the box has all four >= 0.

Boxes are xyxy absolute pixels (float32), priors in the same frame. Every function takes
any leading shape that broadcasts (`[B, A, 4]` against `[A, 4]` anchors, for example).
"""

from __future__ import annotations

import math

import tensorflow as tf

from detseg.models.ops.box_ops import cxcywh_to_xyxy, xyxy_to_cxcywh

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)
# exp() of a predicted log-scale above this would overflow or give absurd boxes; the
# value is torchvision's (a box at most 1000/16 times its anchor).
MAX_LOG_SCALE = math.log(1000.0 / 16.0)
MIN_SIDE = 1e-6  # a zero-width box has no log-size; encode it as this width instead


class BoxCodingError(ValueError):
    """Coding parameters that cannot encode boxes (e.g. a zero variance)."""


def _variances(variances, dtype) -> tf.Tensor:
    values = tuple(float(v) for v in variances)
    if len(values) != 4 or min(values) <= 0:
        raise BoxCodingError(f"box coding variances must be 4 positive numbers, got {values}")
    return tf.constant(values, dtype)


def encode_center_size(boxes, anchors, variances=SSD_VARIANCES) -> tf.Tensor:
    """xyxy boxes `[..., 4]` -> deltas `(dx, dy, dw, dh)` `[..., 4]` against xyxy anchors.

    Degenerate (zero-size) boxes or anchors are measured as `MIN_SIDE` wide, so the
    result stays finite; callers mask such rows (padding) out of the loss anyway.
    """
    boxes = tf.cast(boxes, tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    cx, cy, w, h = tf.unstack(xyxy_to_cxcywh(boxes), num=4, axis=-1)
    acx, acy, aw, ah = tf.unstack(xyxy_to_cxcywh(anchors), num=4, axis=-1)
    aw, ah = tf.maximum(aw, MIN_SIDE), tf.maximum(ah, MIN_SIDE)
    w, h = tf.maximum(w, MIN_SIDE), tf.maximum(h, MIN_SIDE)
    deltas = tf.stack([(cx - acx) / aw, (cy - acy) / ah, tf.math.log(w / aw), tf.math.log(h / ah)], axis=-1)
    return deltas / _variances(variances, tf.float32)


def decode_center_size(deltas, anchors, variances=SSD_VARIANCES,
                       max_log_scale: float = MAX_LOG_SCALE) -> tf.Tensor:
    """Deltas `[..., 4]` + xyxy anchors -> xyxy boxes `[..., 4]` (inverse of `encode_center_size`).

    `dw`, `dh` (after the variances) are clamped to `max_log_scale` so an untrained head
    cannot produce infinite boxes.
    """
    deltas = tf.cast(deltas, tf.float32) * _variances(variances, tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    dx, dy, dw, dh = tf.unstack(deltas, num=4, axis=-1)
    acx, acy, aw, ah = tf.unstack(xyxy_to_cxcywh(anchors), num=4, axis=-1)
    dw, dh = tf.minimum(dw, max_log_scale), tf.minimum(dh, max_log_scale)
    centre_size = tf.stack([acx + dx * aw, acy + dy * ah, aw * tf.exp(dw), ah * tf.exp(dh)], axis=-1)
    return cxcywh_to_xyxy(centre_size)


def encode_ltrb(boxes, points, strides) -> tf.Tensor:
    """xyxy boxes `[..., 4]` -> `(l, t, r, b)` `[..., 4]` from xy `points` `[..., 2]`, in strides.

    `strides` `[...]` broadcasts against the boxes' leading shape. Points outside a box
    give negative distances: assigners only pick points inside their box.
    """
    boxes = tf.cast(boxes, tf.float32)
    points = tf.cast(points, tf.float32)
    strides = tf.cast(strides, tf.float32)[..., tf.newaxis]
    left_top = points - boxes[..., :2]
    right_bottom = boxes[..., 2:] - points
    return tf.concat([left_top, right_bottom], axis=-1) / strides


def decode_ltrb(distances, points, strides) -> tf.Tensor:
    """`(l, t, r, b)` `[..., 4]` in strides + xy `points` `[..., 2]` -> xyxy boxes `[..., 4]` px."""
    distances = tf.cast(distances, tf.float32) * tf.cast(strides, tf.float32)[..., tf.newaxis]
    points = tf.cast(points, tf.float32)
    return tf.concat([points - distances[..., :2], points + distances[..., 2:]], axis=-1)
