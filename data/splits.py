"""Splitting a COCO dataset by image: train/val/test and k folds.

Splits are by image, never by annotation, so no image (and none of its objects) is in
two parts. They are deterministic under a seed: the image ids are shuffled with
`numpy.random.default_rng(seed)`; each part keeps the dataset's original image order.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from detseg.data.coco import CocoDataset
from detseg.data.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")
FRACTION_TOLERANCE = 1e-6


def split_by_image(dataset: CocoDataset, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0) -> dict[str, CocoDataset]:
    """`{"train", "val", "test"}` -> disjoint subsets whose sizes follow `fractions`.

    Sizes are rounded by largest remainder so they add up to the number of images
    (10 images at 0.7/0.15/0.15 -> 7/2/1, ties going to the earlier part).
    Raises `DatasetError` unless there are three fractions >= 0 that sum to 1 (within 1e-6).
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLIT_NAMES):
        raise DatasetError(f"split fractions: need {len(SPLIT_NAMES)} (train, val, test), got {list(fractions)}")
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise DatasetError(f"split fractions must be finite and >= 0, got {list(fractions)}")
    if abs(sum(fractions) - 1.0) > FRACTION_TOLERANCE:
        raise DatasetError(f"split fractions must sum to 1, got {list(fractions)} (sum {sum(fractions):.6g})")
    shuffled = _shuffled_ids(dataset, seed)
    sizes = _largest_remainder_sizes(fractions, len(shuffled))
    bounds = np.cumsum([0, *sizes])
    return {name: _subset_in_dataset_order(dataset, shuffled[bounds[k]:bounds[k + 1]])
            for k, name in enumerate(SPLIT_NAMES)}


def k_fold(dataset: CocoDataset, k: int, seed: int = 0) -> list[tuple[CocoDataset, CocoDataset]]:
    """`k` `(train, val)` pairs; every image is in exactly one val part, fold sizes differ by <= 1."""
    if k < 2:
        raise DatasetError(f"k-fold needs k >= 2, got {k}")
    if k > len(dataset.images):
        raise DatasetError(f"k-fold with k={k} needs at least {k} images, the dataset has {len(dataset.images)}")
    folds = np.array_split(np.array(_shuffled_ids(dataset, seed), np.int64), k)
    pairs = []
    for held_out in range(k):
        train_ids = [int(i) for j, fold in enumerate(folds) if j != held_out for i in fold]
        pairs.append((_subset_in_dataset_order(dataset, train_ids),
                      _subset_in_dataset_order(dataset, [int(i) for i in folds[held_out]])))
    return pairs


def _shuffled_ids(dataset: CocoDataset, seed: int) -> list[int]:
    ids = [image.id for image in dataset.images]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{dataset.source or 'dataset'}: image ids are not unique; cannot split by image")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order]


def _largest_remainder_sizes(fractions: Sequence[float], total: int) -> list[int]:
    exact = [f * total for f in fractions]
    sizes = [int(math.floor(e)) for e in exact]
    # stable sort: equal remainders go to the earlier part
    by_remainder = sorted(range(len(exact)), key=lambda k: sizes[k] - exact[k])
    for k in by_remainder[:total - sum(sizes)]:
        sizes[k] += 1
    return sizes


def _subset_in_dataset_order(dataset: CocoDataset, image_ids: Sequence[int]) -> CocoDataset:
    chosen = set(image_ids)
    return dataset.subset([image.id for image in dataset.images if image.id in chosen])
