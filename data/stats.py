"""Dataset statistics: counts per class, box sizes, and per-channel pixel mean/std.

Box statistics describe non-crowd annotations (crowd regions are counted apart):
sizes use COCO's area ranges on the annotation's `area` field (small < 32², medium
< 96², large otherwise), exactly as COCO evaluation buckets objects. Pixel statistics
are over RGB values 0..255 (grayscale, palette and RGBA images converted to RGB).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from detseg.data.coco import Annotation, CocoDataset
from detseg.data.errors import DatasetError

SMALL_AREA = 32 ** 2
MEDIUM_AREA = 96 ** 2
PERCENTILES = {"min": 0, "p5": 5, "p25": 25, "median": 50, "p75": 75, "p95": 95, "max": 100}
PROGRESS_BAR_MIN_IMAGES = 200
CHANNELS = ("R", "G", "B")


def dataset_statistics(dataset: CocoDataset, channel_stats: bool = True,
                       max_images: int | None = None) -> dict[str, Any]:
    """A JSON-ready dict describing `dataset`.

    Keys: num_images, num_annotations, num_categories, images_without_objects,
    crowd_annotations, objects_per_class / images_per_class ({name: count}, every
    category listed), area_ranges ({small, medium, large}), box_width, box_height,
    box_aspect (w/h) and image_width / image_height percentiles ({min, p5, ..., max}).
    With `channel_stats`: channel_mean and channel_std ([R, G, B], population std over
    every pixel) and channel_images (how many images were read: all, or `max_images`
    spread evenly over the dataset), in one streaming pass over the image files.
    """
    names = _class_names(dataset)
    objects = [a for a in dataset.annotations if not a.iscrowd]
    stats: dict[str, Any] = {
        "num_images": len(dataset.images),
        "num_annotations": len(dataset.annotations),
        "num_categories": len(dataset.categories),
        "images_without_objects": sum(1 for i in dataset.images if not i.annotations),
        "crowd_annotations": len(dataset.annotations) - len(objects),
        "objects_per_class": _count_per_class(names, [[a] for a in objects]),
        "images_per_class": _count_per_class(
            names, [[a for a in i.annotations if not a.iscrowd] for i in dataset.images]),
        "area_ranges": _area_ranges(objects),
        "box_width": _percentiles([a.bbox[2] for a in objects]),
        "box_height": _percentiles([a.bbox[3] for a in objects]),
        "box_aspect": _percentiles([a.bbox[2] / a.bbox[3] for a in objects if a.bbox[3] > 0]),
        "image_width": _percentiles([i.width for i in dataset.images]),
        "image_height": _percentiles([i.height for i in dataset.images]),
    }
    if channel_stats:
        stats.update(channel_statistics(dataset, max_images))
    return stats


def channel_statistics(dataset: CocoDataset, max_images: int | None = None) -> dict[str, Any]:
    """Per-channel mean/std of RGB pixels 0..255, in one pass over the images.

    Sums and sums of squares are kept as exact integers, so the result does not drift
    with the number of pixels (no E[x²] - E[x]² cancellation in floating point).
    """
    records = dataset.images
    if max_images is not None and max_images < len(records):
        picks = np.linspace(0, len(records) - 1, num=max(max_images, 0)).round().astype(int)
        records = [records[i] for i in picks]
    count, sums, squares = 0, [0, 0, 0], [0, 0, 0]
    bar = tqdm(records, desc="channel stats", unit="img", file=sys.stderr,
               disable=len(records) <= PROGRESS_BAR_MIN_IMAGES)
    for record in bar:
        pixels = _read_rgb(dataset.image_path(record)).reshape(-1, 3).astype(np.int64)
        count += pixels.shape[0]
        for c in range(3):
            sums[c] += int(pixels[:, c].sum())
            squares[c] += int(np.dot(pixels[:, c], pixels[:, c]))
    if count == 0:
        return {"channel_mean": None, "channel_std": None, "channel_images": len(records)}
    means = [s / count for s in sums]
    stds = [float(np.sqrt((q * count - s * s) / count ** 2)) for s, q in zip(sums, squares)]
    return {"channel_mean": means, "channel_std": stds, "channel_images": len(records)}


def _read_rgb(path) -> np.ndarray:
    """`uint8 [H, W, 3]` RGB pixels (alpha dropped, grayscale repeated)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None


def _class_names(dataset: CocoDataset) -> dict[int, str]:
    """COCO id -> a unique display name (a repeated name gets its id appended)."""
    names = [c.name for c in dataset.categories]
    return {c.id: c.name if names.count(c.name) == 1 else f"{c.name} (id {c.id})"
            for c in sorted(dataset.categories, key=lambda c: c.id)}


def _count_per_class(names: dict[int, str], groups: list[list[Annotation]]) -> dict[str, int]:
    """How many groups hold at least one annotation of each class."""
    counts = dict.fromkeys(names.values(), 0)
    for group in groups:
        for category_id in {a.category_id for a in group}:
            counts[names[category_id]] += 1
    return counts


def _area_ranges(objects: list[Annotation]) -> dict[str, int]:
    areas = np.array([a.area for a in objects], np.float64)
    return {"small": int((areas < SMALL_AREA).sum()),
            "medium": int(((areas >= SMALL_AREA) & (areas < MEDIUM_AREA)).sum()),
            "large": int((areas >= MEDIUM_AREA).sum())}


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    points = np.percentile(np.asarray(values, np.float64), list(PERCENTILES.values()))
    return {name: float(v) for name, v in zip(PERCENTILES, points)}


def format_statistics(stats: dict[str, Any]) -> str:
    """The dict of `dataset_statistics` as a plain-text report for a terminal."""
    lines = [f"images: {stats['num_images']} ({stats['images_without_objects']} without objects)",
             f"annotations: {stats['num_annotations']} ({stats['crowd_annotations']} crowd)",
             f"categories: {stats['num_categories']}", ""]
    width = max([len("class"), *map(len, stats["objects_per_class"])])
    lines.append(f"{'class':<{width}}  {'objects':>8}  {'images':>8}")
    for name, objects in stats["objects_per_class"].items():
        lines.append(f"{name:<{width}}  {objects:>8}  {stats['images_per_class'][name]:>8}")
    ranges = stats["area_ranges"]
    lines += ["", f"box area (COCO ranges): small {ranges['small']}, medium {ranges['medium']}, "
                  f"large {ranges['large']}", ""]
    lines.append(f"{'':<12}" + "".join(f"{name:>9}" for name in PERCENTILES))
    for key in ("box_width", "box_height", "box_aspect", "image_width", "image_height"):
        row = stats[key]
        cells = "".join(f"{row[name]:>9.2f}" for name in PERCENTILES) if row else f"{'-':>9}"
        lines.append(f"{key:<12}{cells}")
    if stats.get("channel_mean") is not None:
        lines += ["", f"pixels (RGB 0..255, {stats['channel_images']} images):"]
        for c, channel in enumerate(CHANNELS):
            lines.append(f"  {channel}: mean {stats['channel_mean'][c]:7.3f}  std {stats['channel_std'][c]:7.3f}")
    return "\n".join(lines)
