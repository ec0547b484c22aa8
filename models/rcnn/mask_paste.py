"""Pasting per-box `S x S` mask probabilities back into the image frame, in-graph.

Mask `k` covers its box `(x0, y0, x1, y1)` with `S x S` cells: cell `(i, j)` is centred on
image point `(x0 + (j + 0.5) w / S, y0 + (i + 0.5) h / S)`. Image pixel `(x, y)` (centre
`(x + 0.5, y + 0.5)`) reads the mask bilinearly at cell coordinate
`u = (x + 0.5 - x0) S / w - 0.5`. The mask is padded with one cell of zeros, so the
probability fades to 0 within half a cell outside the box, and is 0 further out.

Since `u` is linear in `x`, one `tf.image.crop_and_resize` of the padded mask, with the
"crop box" chosen so that its samples land on the image's pixel centres, pastes a
whole mask at once (graph-mode and SavedModel friendly, no Python loops).
"""

from __future__ import annotations

import tensorflow as tf


def _paste_boxes(boxes: tf.Tensor, mask_size: int, height: int, width: int) -> tf.Tensor:
    """xyxy px `[K, 4]` -> normalized yxyx crop boxes on the zero-padded `(S + 2)^2` mask."""
    x0, y0, x1, y1 = tf.unstack(tf.cast(boxes, tf.float32), num=4, axis=-1)
    box_w, box_h = tf.maximum(x1 - x0, 1e-3), tf.maximum(y1 - y0, 1e-3)
    scale = float(mask_size + 1)  # padded side - 1: normalized -> index coordinates

    def padded_coordinate(pixel_centre, start, length):
        return ((pixel_centre - start) * mask_size / length - 0.5 + 1.0) / scale

    return tf.stack([padded_coordinate(0.5, y0, box_h), padded_coordinate(0.5, x0, box_w),
                     padded_coordinate(height - 0.5, y0, box_h),
                     padded_coordinate(width - 0.5, x0, box_w)], axis=-1)


def paste_masks(masks: tf.Tensor, boxes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Per-box mask probabilities -> image-frame probabilities.

    Args:
        masks: float32 `[B, K, S, S]` in 0..1 (S x S covering each box).
        boxes: float32 `[B, K, 4]` xyxy px in the image frame.
        image_size: `(H, W)`, static.
    Returns float32 `[B, K, H, W]` in 0..1, 0 outside each box (plus half a mask cell).
    """
    height, width = (int(side) for side in image_size)
    mask_size = int(masks.shape[-1])

    def paste_image(args):
        image_masks, image_boxes = args  # [K, S, S], [K, 4]
        padded = tf.pad(image_masks, [[0, 0], [1, 1], [1, 1]])[..., tf.newaxis]
        count = tf.shape(image_boxes)[0]
        pasted = tf.image.crop_and_resize(padded, _paste_boxes(image_boxes, mask_size, height, width),
                                          tf.range(count), [height, width], extrapolation_value=0.0)
        return pasted[..., 0]

    # One image at a time keeps the peak memory at K x H x W, not B x K x H x W.
    return tf.map_fn(paste_image, (tf.cast(masks, tf.float32), tf.cast(boxes, tf.float32)),
                     fn_output_signature=tf.TensorSpec([None, height, width], tf.float32))
