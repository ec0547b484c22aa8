"""Intersection over union of xyxy pixel boxes, in numpy (evaluation runs off the graph).

Boxes are `float [N, 4]` `(x0, y0, x1, y1)` absolute pixels; an empty or inverted box
has zero area, and an IoU with a zero-area union is 0.
"""

from __future__ import annotations

import numpy as np


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[N, 4]`, `[M, 4]` -> `[N, M]` intersection areas."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[N, 4]`, `[M, 4]` -> `[N, M]` IoU of every box in `a` with every box in `b`."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = pairwise_intersection(a, b)
    union = _areas(a)[:, None] + _areas(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[N, 4]`, `[N, 4]` -> `[N]` IoU of `a[i]` with `b[i]`."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) != len(b):
        raise ValueError(f"paired_iou needs as many boxes on both sides, got {len(a)} and {len(b)}")
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = _areas(a) + _areas(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
