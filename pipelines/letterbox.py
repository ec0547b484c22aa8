"""Letterbox: resize an image to a square model size keeping its aspect, pad the rest.

The transform, for an image of `height x width` pixels and model size `size` (exact
formula, so `models`/`serving` can reimplement it in-graph without importing pipelines):

    scale     = size / max(height, width)
    resized_w = clip(floor(width  * scale + 0.5), 1, size)
    resized_h = clip(floor(height * scale + 0.5), 1, size)
    pad_x     = (size - resized_w) // 2          # integer division
    pad_y     = (size - resized_h) // 2

The image is resized to `resized_h x resized_w` with bilinear interpolation and half-pixel
centres, no antialiasing (`tf.image.resize(method="bilinear")` equals OpenCV `INTER_LINEAR`
up to one grey level), and placed at `(pad_y, pad_x)` on a `size x size` canvas filled with
`PAD_PIXEL_VALUE`. Boxes (xyxy pixels) map as `x' = x * scale + pad_x`, `y' = y * scale +
pad_y`, and back as

    x = clip((x' - pad_x) / scale, 0, width)
    y = clip((y' - pad_y) / scale, 0, height)

Masks are resized with nearest-neighbour at half-pixel centres (OpenCV `INTER_NEAREST_EXACT`,
`tf.image.resize(method="nearest")`) and padded with 0 (instance) or the semantic
ignore value; back to the original frame: crop `[pad_y:pad_y+resized_h, pad_x:pad_x+resized_w]`
and resize (nearest) to `height x width` (`masks_to_original`).

A transform travels as a `float32 [5]` vector `(scale, pad_x, pad_y, height, width)`
(`LetterboxTransform.as_array`), `[B, 5]` in evaluation batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from detseg.pipelines.batch_contract import PAD_BOX_VALUE, TRANSFORM_SIZE

PAD_PIXEL_VALUE = 114.0  # mid-grey canvas: closest to the mean pixel, least edge contrast


@dataclass(frozen=True)
class LetterboxTransform:
    """Where an original `height x width` image sits in the `size x size` model frame."""

    scale: float
    pad_x: int
    pad_y: int
    height: int
    width: int

    @property
    def resized_width(self) -> int:
        return _resized_length(self.width, self.scale)

    @property
    def resized_height(self) -> int:
        return _resized_length(self.height, self.scale)

    def as_array(self) -> np.ndarray:
        """`float32 [5]`: `(scale, pad_x, pad_y, height, width)`."""
        return np.array([self.scale, self.pad_x, self.pad_y, self.height, self.width], np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "LetterboxTransform":
        scale, pad_x, pad_y, height, width = (float(v) for v in np.asarray(values).reshape(TRANSFORM_SIZE))
        return cls(scale, int(round(pad_x)), int(round(pad_y)), int(round(height)), int(round(width)))


def _resized_length(length: int, scale: float) -> int:
    return max(int(math.floor(length * scale + 0.5)), 1)


def letterbox_params(height: int, width: int, size: int) -> LetterboxTransform:
    """The transform placing a `height x width` image in a `size x size` square."""
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"letterbox needs positive sizes, got height={height} width={width} size={size}")
    scale = size / max(height, width)
    resized_w = min(_resized_length(width, scale), size)
    resized_h = min(_resized_length(height, scale), size)
    return LetterboxTransform(scale, (size - resized_w) // 2, (size - resized_h) // 2, int(height), int(width))


def letterbox_image(image: np.ndarray, transform: LetterboxTransform, size: int,
                    fill: float = PAD_PIXEL_VALUE) -> np.ndarray:
    """`[H, W, C]` image -> `float32 [size, size, C]` letterboxed (bilinear, canvas = `fill`)."""
    resized = cv2.resize(image, (transform.resized_width, transform.resized_height),
                         interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(transform.resized_height, transform.resized_width, -1)
    canvas = np.full((size, size, resized.shape[-1]), fill, np.float32)
    _paste(canvas, resized, transform)
    return canvas


def letterbox_masks(masks: np.ndarray, transform: LetterboxTransform, size: int, fill: int = 0) -> np.ndarray:
    """`uint8 [N, H, W]` masks -> `uint8 [N, size, size]` (nearest neighbour, padding = `fill`)."""
    count = masks.shape[0]
    canvas = np.full((count, size, size), fill, np.uint8)
    # OpenCV resizes up to 512 channels at once; chunk to stay within that.
    for start in range(0, count, 512):
        chunk = np.ascontiguousarray(np.moveaxis(masks[start:start + 512], 0, -1))
        resized = cv2.resize(chunk, (transform.resized_width, transform.resized_height),
                             interpolation=cv2.INTER_NEAREST_EXACT)
        resized = resized.reshape(transform.resized_height, transform.resized_width, -1)
        _paste(canvas[start:start + 512], np.moveaxis(resized, -1, 0), transform, channels_last=False)
    return canvas


def letterbox_boxes(boxes: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """`[N, 4]` xyxy original-pixel boxes -> `float32 [N, 4]` model-frame boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    offset = np.array([transform.pad_x, transform.pad_y] * 2, np.float32)
    return (boxes * np.float32(transform.scale) + offset).astype(np.float32)


def _paste(canvas: np.ndarray, resized: np.ndarray, transform: LetterboxTransform,
           channels_last: bool = True) -> None:
    y0, x0 = transform.pad_y, transform.pad_x
    y1, x1 = y0 + transform.resized_height, x0 + transform.resized_width
    if channels_last:
        canvas[y0:y1, x0:x1] = resized
    else:
        canvas[:, y0:y1, x0:x1] = resized


def boxes_to_original(boxes: np.ndarray, transform: LetterboxTransform | np.ndarray) -> np.ndarray:
    """Model-frame xyxy boxes -> `float32` boxes in the original image's pixels, clipped to it.

    `boxes` is `[N, 4]` with a `LetterboxTransform` or `[5]` vector, or `[B, N, 4]` with a
    `[B, 5]` array (one transform per image). Padding rows (all `PAD_BOX_VALUE`) stay padding.
    """
    boxes = np.asarray(boxes, np.float32)
    t = transform.as_array() if isinstance(transform, LetterboxTransform) else np.asarray(transform, np.float32)
    if t.ndim == 2:  # one transform per image of a [B, N, 4] batch
        t = t[:, None, :]
    scale, pad_x, pad_y, height, width = (t[..., i:i + 1] for i in range(TRANSFORM_SIZE))
    x = (boxes[..., 0::2] - pad_x) / scale
    y = (boxes[..., 1::2] - pad_y) / scale
    x, y = np.clip(x, 0, width), np.clip(y, 0, height)
    restored = np.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1).astype(np.float32)
    padding = np.all(boxes == PAD_BOX_VALUE, axis=-1, keepdims=True)
    return np.where(padding, np.float32(PAD_BOX_VALUE), restored)


def boxes_to_original_tf(boxes: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
    """TF twin of `boxes_to_original`: boxes `[B, N, 4]`, transform `[B, 5]` -> `[B, N, 4]`."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    t = tf.convert_to_tensor(transform, tf.float32)[:, None, :]
    scale, pad_x, pad_y, height, width = (t[..., i:i + 1] for i in range(TRANSFORM_SIZE))
    x = tf.clip_by_value((boxes[..., 0::2] - pad_x) / scale, 0.0, width)
    y = tf.clip_by_value((boxes[..., 1::2] - pad_y) / scale, 0.0, height)
    restored = tf.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)
    padding = tf.reduce_all(tf.equal(boxes, PAD_BOX_VALUE), axis=-1, keepdims=True)
    return tf.where(padding, tf.constant(PAD_BOX_VALUE, tf.float32), restored)


def masks_to_original(masks: np.ndarray, transform: LetterboxTransform | np.ndarray) -> np.ndarray:
    """`uint8 [N, size, size]` model-frame masks -> `uint8 [N, height, width]` (nearest)."""
    t = transform if isinstance(transform, LetterboxTransform) else LetterboxTransform.from_array(transform)
    masks = np.asarray(masks)
    inside = masks[:, t.pad_y:t.pad_y + t.resized_height, t.pad_x:t.pad_x + t.resized_width]
    out = np.zeros((masks.shape[0], t.height, t.width), masks.dtype)
    for start in range(0, masks.shape[0], 512):
        chunk = np.ascontiguousarray(np.moveaxis(inside[start:start + 512], 0, -1))
        resized = cv2.resize(chunk, (t.width, t.height), interpolation=cv2.INTER_NEAREST_EXACT)
        out[start:start + 512] = np.moveaxis(resized.reshape(t.height, t.width, -1), -1, 0)
    return out


def letterbox_image_tf(image: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """In-graph reference letterbox: `uint8/float [H, W, 3]` -> (`float32 [size, size, 3]`, `[5]`).

    Matches `letterbox_params` + `letterbox_image` (up to one grey level of interpolation
    rounding): the recipe for export/serving code that cannot import this package.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = tf.cast(size, tf.float64) / tf.maximum(height, width)
    resized_w = tf.clip_by_value(tf.cast(tf.floor(width * scale + 0.5), tf.int32), 1, size)
    resized_h = tf.clip_by_value(tf.cast(tf.floor(height * scale + 0.5), tf.int32), 1, size)
    pad_x, pad_y = (size - resized_w) // 2, (size - resized_h) // 2
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([resized_h, resized_w]), method="bilinear")
    canvas = tf.pad(resized - PAD_PIXEL_VALUE,
                    [[pad_y, size - resized_h - pad_y], [pad_x, size - resized_w - pad_x], [0, 0]]) + PAD_PIXEL_VALUE
    transform = tf.stack([tf.cast(scale, tf.float32), tf.cast(pad_x, tf.float32), tf.cast(pad_y, tf.float32),
                          tf.cast(height, tf.float32), tf.cast(width, tf.float32)])
    return tf.ensure_shape(canvas, [size, size, 3]), transform
