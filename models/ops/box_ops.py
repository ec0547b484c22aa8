"""Box geometry in pure TensorFlow: format conversions, IoU, GIoU, clipping.

Inside detseg boxes are `xyxy` absolute pixels, float32: `(x_min, y_min, x_max, y_max)`
with x to the right and y down, the max edge exclusive (a box covering pixel columns
0..9 is `x_min=0, x_max=10`, width 10). The other formats exist only at the edges:

- `xywh`: `(x_min, y_min, width, height)`, as in COCO files;
- `cxcywh`: `(x_center, y_center, width, height)`, as in YOLO-style heads;
- `yxyx`: `(y_min, x_min, y_max, x_max)`, what `tf.image` ops take.

Every function works on any leading shape `[..., 4]` and on empty inputs. A box with
`x_max < x_min` or `y_max < y_min` counts as empty (area 0), never negative.
Divisions by a zero union or enclosing area give 0 instead of NaN.
"""

from __future__ import annotations

import tensorflow as tf

BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "yxyx")


def _split(boxes):
    boxes = tf.convert_to_tensor(boxes)
    return tf.unstack(boxes, num=4, axis=-1)


def _float_boxes(boxes) -> tf.Tensor:
    boxes = tf.convert_to_tensor(boxes)
    return boxes if boxes.dtype.is_floating else tf.cast(boxes, tf.float32)


def xyxy_to_xywh(boxes):
    """`[..., 4]` xyxy -> xywh."""
    x0, y0, x1, y1 = _split(boxes)
    return tf.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(boxes):
    """`[..., 4]` xywh -> xyxy."""
    x, y, w, h = _split(boxes)
    return tf.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_cxcywh(boxes):
    """`[..., 4]` xyxy -> cxcywh."""
    x0, y0, x1, y1 = _split(_float_boxes(boxes))
    return tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def cxcywh_to_xyxy(boxes):
    """`[..., 4]` cxcywh -> xyxy."""
    cx, cy, w, h = _split(_float_boxes(boxes))
    return tf.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def xyxy_to_yxyx(boxes):
    """`[..., 4]` xyxy -> yxyx (the conversion is its own inverse)."""
    x0, y0, x1, y1 = _split(boxes)
    return tf.stack([y0, x0, y1, x1], axis=-1)


def yxyx_to_xyxy(boxes):
    """`[..., 4]` yxyx -> xyxy."""
    return xyxy_to_yxyx(boxes)


_TO_XYXY = {"xyxy": tf.convert_to_tensor, "xywh": xywh_to_xyxy,
            "cxcywh": cxcywh_to_xyxy, "yxyx": yxyx_to_xyxy}
_FROM_XYXY = {"xyxy": tf.convert_to_tensor, "xywh": xyxy_to_xywh,
              "cxcywh": xyxy_to_cxcywh, "yxyx": xyxy_to_yxyx}


def convert_boxes(boxes, source: str, target: str):
    """`[..., 4]` boxes from format `source` to format `target` (both in `BOX_FORMATS`)."""
    for role, name in (("source", source), ("target", target)):
        if name not in BOX_FORMATS:
            raise ValueError(f"convert_boxes: unknown {role} format {name!r}; expected one of {BOX_FORMATS}")
    return _FROM_XYXY[target](_TO_XYXY[source](boxes))


def box_area(boxes):
    """`[..., 4]` xyxy -> `[...]` areas (0 for inverted boxes)."""
    x0, y0, x1, y1 = _split(_float_boxes(boxes))
    return tf.maximum(x1 - x0, 0.0) * tf.maximum(y1 - y0, 0.0)


def clip_boxes(boxes, image_size):
    """Clips `[..., 4]` xyxy pixel boxes to images of `image_size = (height, width)`.

    Coordinates end up in `0..width` (x) and `0..height` (y). `image_size` is a pair
    (Python or tensor `[2]`) or per-box sizes `[..., 2]` broadcastable to the boxes'
    leading shape (for boxes `[B, N, 4]` and sizes `[B, 2]` pass `sizes[:, None, :]`).
    """
    boxes = _float_boxes(boxes)
    size = tf.cast(tf.convert_to_tensor(image_size), boxes.dtype)
    height, width = size[..., 0], size[..., 1]
    x0, y0, x1, y1 = tf.unstack(boxes, num=4, axis=-1)
    clip_x = lambda x: tf.minimum(tf.maximum(x, 0.0), width)  # noqa: E731
    clip_y = lambda y: tf.minimum(tf.maximum(y, 0.0), height)  # noqa: E731
    return tf.stack([clip_x(x0), clip_y(y0), clip_x(x1), clip_y(y1)], axis=-1)


def _intersection_and_union(boxes1, boxes2):
    """Broadcasting `[..., 4]` xyxy pairs -> (intersection, union), each `[...]`."""
    a0, b0, a1, b1 = _split(boxes1)
    c0, d0, c1, d1 = _split(boxes2)
    width = tf.maximum(tf.minimum(a1, c1) - tf.maximum(a0, c0), 0.0)
    height = tf.maximum(tf.minimum(b1, d1) - tf.maximum(b0, d0), 0.0)
    intersection = width * height
    union = box_area(boxes1) + box_area(boxes2) - intersection
    return intersection, union


def elementwise_iou(boxes1, boxes2):
    """IoU of matching boxes: `[..., 4]` and `[..., 4]` xyxy (broadcastable) -> `[...]` in 0..1."""
    boxes1, boxes2 = _float_boxes(boxes1), _float_boxes(boxes2)
    intersection, union = _intersection_and_union(boxes1, boxes2)
    return tf.math.divide_no_nan(intersection, union)


def elementwise_giou(boxes1, boxes2):
    """Generalized IoU of matching boxes: `[..., 4]` xyxy pairs -> `[...]` in -1..1.

    GIoU = IoU - (C - U) / C with C the area of the smallest box enclosing both and U
    their union (Rezatofighi et al., 2019): unlike IoU it still says how far apart
    two disjoint boxes are, so it gives a useful loss gradient.
    """
    boxes1, boxes2 = _float_boxes(boxes1), _float_boxes(boxes2)
    intersection, union = _intersection_and_union(boxes1, boxes2)
    iou = tf.math.divide_no_nan(intersection, union)
    a0, b0, a1, b1 = _split(boxes1)
    c0, d0, c1, d1 = _split(boxes2)
    enclosing = (tf.maximum(tf.maximum(a1, c1) - tf.minimum(a0, c0), 0.0)
                 * tf.maximum(tf.maximum(b1, d1) - tf.minimum(b0, d0), 0.0))
    return iou - tf.math.divide_no_nan(enclosing - union, enclosing)


def _pairwise(boxes1, boxes2):
    """`[..., N, 4]`, `[..., M, 4]` -> `[..., N, 1, 4]`, `[..., 1, M, 4]` for broadcasting."""
    boxes1, boxes2 = _float_boxes(boxes1), _float_boxes(boxes2)
    return boxes1[..., :, tf.newaxis, :], boxes2[..., tf.newaxis, :, :]


def pairwise_iou(boxes1, boxes2):
    """IoU of every pair: `[..., N, 4]` x `[..., M, 4]` xyxy -> `[..., N, M]`."""
    return elementwise_iou(*_pairwise(boxes1, boxes2))


def pairwise_giou(boxes1, boxes2):
    """GIoU of every pair: `[..., N, 4]` x `[..., M, 4]` xyxy -> `[..., N, M]`."""
    return elementwise_giou(*_pairwise(boxes1, boxes2))


def giou_loss(boxes_true, boxes_pred):
    """`1 - GIoU` of matching xyxy boxes `[..., 4]` -> `[...]` in 0..2 (0 = identical)."""
    return 1.0 - elementwise_giou(boxes_true, boxes_pred)
