"""The pipeline's letterbox, in numpy/OpenCV (per example, inside `tf.numpy_function`).

The transform and its inverse are defined once, in `detseg.models.ops.letterbox` (TF; its
module docstring states the formula). This module is its fast numpy twin for the input
pipeline and nothing more:

- `letterbox_params` takes the resized lengths and pads from `letterbox_lengths`, the one
  formula (exact integer arithmetic, so the twin cannot round differently);
- `letterbox_image` resizes with OpenCV `INTER_LINEAR` (bilinear, half-pixel centres, no
  antialias), within one grey level of `models.ops.letterbox.letterbox_image`;
- `letterbox_masks` reads the source pixels `nearest_source_index` names, so it equals
  `models.ops.letterbox.letterbox_masks` exactly;
- `letterbox_boxes` is `models.ops.letterbox.boxes_to_frame` in float32 numpy, bit for bit.

`tests/models/test_letterbox.py` proves those equalities over many sizes. The way back to
original pixels (boxes, dense maps, masks) is `models.ops.letterbox` only.

A transform travels as a `float32 [5]` vector `(scale, pad_x, pad_y, height, width)`
(`LetterboxTransform.as_array`), `[B, 5]` in evaluation batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detseg.core.contract import PAD_PIXEL_VALUE, TRANSFORM_SIZE
from detseg.models.ops.letterbox import letterbox_lengths, nearest_source_index

__all__ = ["PAD_PIXEL_VALUE", "LetterboxTransform", "letterbox_params", "letterbox_image", "letterbox_masks",
           "letterbox_boxes"]


@dataclass(frozen=True)
class LetterboxTransform:
    """Where an original `height x width` image sits in the `size x size` model frame."""

    scale: float
    pad_x: int
    pad_y: int
    height: int
    width: int
    resized_height: int
    resized_width: int

    def as_array(self) -> np.ndarray:
        """`float32 [5]`: `(scale, pad_x, pad_y, height, width)`."""
        return np.array([self.scale, self.pad_x, self.pad_y, self.height, self.width], np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "LetterboxTransform":
        """The transform of a `[5]` vector; the model size is `round(scale * max(height, width))`."""
        scale, _, _, height, width = (float(v) for v in np.asarray(values, np.float32).reshape(TRANSFORM_SIZE))
        height, width = int(round(height)), int(round(width))
        return letterbox_params(height, width, int(round(scale * max(height, width))))


def letterbox_params(height: int, width: int, size: int) -> LetterboxTransform:
    """The transform placing a `height x width` image in a `size x size` square."""
    height, width, size = int(height), int(width), int(size)
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"letterbox needs positive sizes, got height={height} width={width} size={size}")
    resized_h, resized_w, pad_y, pad_x = letterbox_lengths(height, width, size)
    return LetterboxTransform(size / max(height, width), pad_x, pad_y, height, width, resized_h, resized_w)


def letterbox_image(image: np.ndarray, transform: LetterboxTransform, size: int,
                    fill: float = PAD_PIXEL_VALUE) -> np.ndarray:
    """`[H, W, C]` image -> `float32 [size, size, C]` letterboxed (bilinear, canvas = `fill`)."""
    resized = cv2.resize(image, (transform.resized_width, transform.resized_height),
                         interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(transform.resized_height, transform.resized_width, -1)
    canvas = np.full((size, size, resized.shape[-1]), fill, np.float32)
    canvas[_inside(transform)] = resized
    return canvas


def letterbox_masks(masks: np.ndarray, transform: LetterboxTransform, size: int, fill: int = 0) -> np.ndarray:
    """`[N, H, W]` masks -> `[N, size, size]`, dtype kept (nearest neighbour, padding = `fill`)."""
    masks = np.asarray(masks)
    rows = nearest_source_index(np.arange(transform.resized_height), transform.height, transform.resized_height)
    cols = nearest_source_index(np.arange(transform.resized_width), transform.width, transform.resized_width)
    canvas = np.full((masks.shape[0], size, size), fill, masks.dtype)
    canvas[(slice(None), *_inside(transform))] = np.take(np.take(masks, rows, axis=1), cols, axis=2)
    return canvas


def letterbox_boxes(boxes: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """`[N, 4]` xyxy original-pixel boxes -> `float32 [N, 4]` frame boxes (`x * scale + pad_x`, ...)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    offset = np.array([transform.pad_x, transform.pad_y] * 2, np.float32)
    return boxes * np.float32(transform.scale) + offset


def _inside(transform: LetterboxTransform) -> tuple[slice, slice]:
    """The rows and columns of the frame the resized image covers."""
    return (slice(transform.pad_y, transform.pad_y + transform.resized_height),
            slice(transform.pad_x, transform.pad_x + transform.resized_width))
