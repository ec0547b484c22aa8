"""Anchor points and anchor boxes over a pyramid of feature maps.

Two kinds of priors, both in the model's input frame (xyxy / xy absolute pixels, float32):

- `grid_points(image_size, strides)`: one point per feature-map cell, at the cell's
  centre, for anchor-free heads (YOLOv8-style: the head predicts distances from the point).
- `AnchorGenerator(...)(image_size)`: `anchors_per_location` boxes per cell (sizes x
  scales x aspect ratios), for anchor-based heads (SSD default boxes, RPN anchors).

ORDER, which every head's flattened output must follow: level by level in the order of
`strides`; within a level, cells row-major (y, then x); within a cell, anchors in
`scales`-major, then `aspect_ratios` order. A head whose level output is
`[B, h, w, K * D]` reshaped to `[B, h * w * K, D]` and concatenated over levels matches.

Feature map `i` has `ceil(H / stride_i) x ceil(W / stride_i)` cells, the shape of a
"same"-padded stride-`s` convolution stack; the cell `(row, col)` centre is at
`((col + offset) * stride, (row + offset) * stride)`.

Everything here is NumPy: anchors depend only on static sizes, so models hold them as
constants (graph- and export-friendly, nothing recomputed per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CELL_CENTRE_OFFSET = 0.5  # points sit in the middle of their cell


class AnchorError(ValueError):
    """Anchor parameters that cannot describe a set of priors."""


def _checked_size(image_size) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in image_size)
    except (TypeError, ValueError):
        raise AnchorError(f"image_size must be (height, width), got {image_size!r}") from None
    if height <= 0 or width <= 0:
        raise AnchorError(f"image_size must be positive, got {(height, width)}")
    return height, width


def _checked_strides(strides) -> tuple[int, ...]:
    strides = tuple(int(stride) for stride in strides)
    if not strides or min(strides) <= 0:
        raise AnchorError(f"strides must be one or more positive integers, got {strides}")
    return strides


def level_shapes(image_size, strides) -> list[tuple[int, int]]:
    """`[(h, w), ...]` cells per level: `ceil(H / stride) x ceil(W / stride)`."""
    height, width = _checked_size(image_size)
    return [(math.ceil(height / s), math.ceil(width / s)) for s in _checked_strides(strides)]


def _cell_centres(shape: tuple[int, int], stride: int, offset: float) -> np.ndarray:
    """`[h * w, 2]` xy pixel centres of one level's cells, row-major."""
    rows, cols = shape
    xs = (np.arange(cols, dtype=np.float64) + offset) * stride
    ys = (np.arange(rows, dtype=np.float64) + offset) * stride
    grid_x, grid_y = np.meshgrid(xs, ys)  # [h, w] each, row-major
    return np.stack([grid_x.reshape(-1), grid_y.reshape(-1)], axis=-1)


def grid_points(image_size, strides=(8, 16, 32),
                offset: float = CELL_CENTRE_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of every level: `(points float32 [A, 2] xy px, strides float32 [A])`.

    `A = sum(h_i * w_i)`; the order is the module's (level, row, column).
    """
    strides = _checked_strides(strides)
    points, point_strides = [], []
    for shape, stride in zip(level_shapes(image_size, strides), strides):
        centres = _cell_centres(shape, stride, offset)
        points.append(centres)
        point_strides.append(np.full(len(centres), stride, np.float64))
    return np.concatenate(points).astype(np.float32), np.concatenate(point_strides).astype(np.float32)


@dataclass(frozen=True)
class AnchorGenerator:
    """Anchor boxes over several feature maps (SSD default boxes, RPN/RetinaNet anchors).

    Level `i` (stride `strides[i]`) has base size `sizes[i]` pixels. Each cell gets, for
    every `scale` in `scales` and `ratio` in `aspect_ratios` (width / height), a box
    centred on the cell centre with area `(sizes[i] * scale) ** 2` and
    `width / height = ratio`:
        width = sizes[i] * scale * sqrt(ratio),  height = sizes[i] * scale / sqrt(ratio).

    `generator(image_size)` -> float32 `[A, 4]` xyxy pixels, `A = sum(h_i * w_i) *
    anchors_per_location` (boxes may reach outside the image: they are not clipped, so
    every cell has the same set of shapes and the head's layout stays uniform).
    """

    strides: tuple[int, ...] = (8, 16, 32)
    sizes: tuple[float, ...] = (32.0, 64.0, 128.0)
    scales: tuple[float, ...] = (1.0,)
    aspect_ratios: tuple[float, ...] = (1.0,)
    offset: float = CELL_CENTRE_OFFSET

    def __post_init__(self):
        object.__setattr__(self, "strides", _checked_strides(self.strides))
        for name in ("sizes", "scales", "aspect_ratios"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or min(values) <= 0:
                raise AnchorError(f"AnchorGenerator.{name} must be positive numbers, got {values}")
            object.__setattr__(self, name, values)
        if len(self.sizes) != len(self.strides):
            raise AnchorError(f"AnchorGenerator: {len(self.sizes)} sizes for {len(self.strides)} "
                              f"strides; give one base size per level")

    @property
    def anchors_per_location(self) -> int:
        """How many boxes each cell has: the head's per-cell output multiplier."""
        return len(self.scales) * len(self.aspect_ratios)

    def cell_shapes(self, size: float) -> np.ndarray:
        """`[K, 2]` (width, height) of one cell's anchors for base size `size`, in order."""
        shapes = []
        for scale in self.scales:
            for ratio in self.aspect_ratios:
                root = math.sqrt(ratio)
                shapes.append((size * scale * root, size * scale / root))
        return np.asarray(shapes, np.float64)

    def __call__(self, image_size) -> np.ndarray:
        boxes = []
        for shape, stride, size in zip(level_shapes(image_size, self.strides), self.strides, self.sizes):
            centres = _cell_centres(shape, stride, self.offset)[:, np.newaxis, :]  # [h*w, 1, 2]
            half = self.cell_shapes(size)[np.newaxis, :, :] / 2.0                 # [1, K, 2]
            level = np.concatenate([centres - half, centres + half], axis=-1)      # [h*w, K, 4]
            boxes.append(level.reshape(-1, 4))
        return np.concatenate(boxes).astype(np.float32)

    def num_anchors(self, image_size) -> int:
        """`A` for `image_size`, without building the boxes."""
        cells = sum(h * w for h, w in level_shapes(image_size, self.strides))
        return cells * self.anchors_per_location

    def get_config(self) -> dict:
        return {"strides": list(self.strides), "sizes": list(self.sizes), "scales": list(self.scales),
                "aspect_ratios": list(self.aspect_ratios), "offset": self.offset}

    @classmethod
    def from_config(cls, config: dict) -> "AnchorGenerator":
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in config.items()})


def linear_anchor_sizes(image_size: int, num_levels: int, min_scale: float = 0.1,
                        max_scale: float = 0.9) -> tuple[float, ...]:
    """SSD's base sizes: `image_size * s_k`, `s_k` evenly spaced from `min_scale` to `max_scale`.

    One level gets `min_scale`. Liu et al. (2016), eq. 4.
    """
    if num_levels < 1 or not 0 < min_scale <= max_scale:
        raise AnchorError(f"linear_anchor_sizes: need num_levels >= 1 and 0 < min_scale <= max_scale, "
                          f"got {num_levels}, {min_scale}, {max_scale}")
    if num_levels == 1:
        return (float(image_size) * min_scale,)
    step = (max_scale - min_scale) / (num_levels - 1)
    return tuple(float(image_size) * (min_scale + step * k) for k in range(num_levels))
