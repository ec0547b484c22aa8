"""COCO records -> checked per-image targets, with every skipped record counted.

`prepare_images` runs once when a pipeline is built. It checks each image file
(`pipelines.image_check`) and each annotation, and turns annotations into the arrays the
per-element code needs. With `skip_invalid=False` the first bad record raises a
`DatasetError` naming it; with `skip_invalid=True` it is left out, remembered, and
`PreparedImages.summary()` lists it ("skipped 2 of 100 images: a.png (file not found), ...").

Target rules (documented here once; `pipelines.batch_contract` states the result):
- Crowd annotations (`iscrowd=1`) are never targets; they are kept apart so semantic
  targets can mark their pixels "ignore".
- Boxes are clipped to the image. A box with a non-finite value, zero/negative width or
  height, or nothing left inside the image after clipping is an invalid annotation.
- An image with more than `max_objects` objects keeps its `max_objects` largest (by box
  area, in annotation order) and is counted in `truncated_images`.
- For "classification_localization", images without any object are excluded and counted.
- Semantic targets come from the annotations (instance masks rendered into a label map),
  unless the user names a folder of semantic mask PNGs (`with_semantic_masks`:
  `data.semantic_masks` in a training config, `--semantic-masks` for `detseg evaluate`);
  then `<folder>/<image stem>.png` (value = COCO category id, 0 background, 255 ignore)
  is each image's truth, and a missing one is a bad image record. A folder is never
  guessed from the layout: `images/` + `masks/` often holds INSTANCE masks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from detseg.core.contract import CLASSIFICATION_LOCALIZATION, INSTANCE, SEMANTIC, check_task
from detseg.data.coco import Annotation, CocoDataset, ImageRecord
from detseg.data.errors import DatasetError
from detseg.pipelines.image_check import image_file_problem

_LISTED_IN_SUMMARY = 10


@dataclass
class SemanticMaskDataset(CocoDataset):
    """A `CocoDataset` whose semantic ground truth is a folder of mask PNGs the user named:
    `semantic_mask_dir/<image stem>.png`. Build it with `with_semantic_masks`."""

    semantic_mask_dir: Path | None = None

    def subset(self, image_ids: Sequence[int]) -> "SemanticMaskDataset":
        return with_semantic_masks(super().subset(image_ids), self.semantic_mask_dir)


def with_semantic_masks(dataset: CocoDataset, mask_dir: str | os.PathLike | None,
                        named_by: str = "semantic mask folder") -> CocoDataset:
    """`dataset` with its semantic truth read from `mask_dir` (None: from the annotations).

    Raises `DatasetError` when `mask_dir` is not a folder; `named_by` says who named it
    (`data.semantic_masks`, `--semantic-masks`) in that message.
    """
    if mask_dir is None:
        return dataset
    folder = Path(mask_dir)
    if not folder.is_dir():
        raise DatasetError(f"{named_by} {folder}: no such folder")
    return SemanticMaskDataset(dataset.images, dataset.categories, dataset.image_dir, dataset.source,
                               dataset.info, semantic_mask_dir=folder)


def semantic_mask_dir(dataset: CocoDataset) -> Path | None:
    """The semantic mask folder the user named for `dataset`, or None (annotations)."""
    return dataset.semantic_mask_dir if isinstance(dataset, SemanticMaskDataset) else None


@dataclass(frozen=True)
class PreparedImage:
    """One usable image: its file, size and targets in ORIGINAL pixels.

    `boxes` is `float32 [K, 4]` xyxy clipped to the image, `classes` `int32 [K]` contiguous
    indices, `annotations` the K matching records (for masks), `crowd` the crowd records,
    `semantic_path` the semantic mask PNG when the user named a folder of them
    (`with_semantic_masks`); None: semantic targets are rendered from `annotations`.
    """

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    annotations: tuple[Annotation, ...]
    crowd: tuple[Annotation, ...] = ()
    semantic_path: Path | None = None


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out with `skip_invalid=True`: which one and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where} ({self.reason})"


@dataclass
class PreparedImages:
    """The usable images and the account of everything left out."""

    images: list[PreparedImage]
    total_images: int
    total_annotations: int
    skipped_images: list[SkippedRecord] = field(default_factory=list)
    skipped_annotations: list[SkippedRecord] = field(default_factory=list)
    excluded_without_objects: int = 0
    truncated_images: int = 0
    max_objects: int = 0

    def summary(self) -> str:
        """One line per kind of left-out record; empty when nothing was left out."""
        lines = []
        for kind, skipped, total in (("images", self.skipped_images, self.total_images),
                                     ("annotations", self.skipped_annotations, self.total_annotations)):
            if skipped:
                listed = ", ".join(str(s) for s in skipped[:_LISTED_IN_SUMMARY])
                more = f", and {len(skipped) - _LISTED_IN_SUMMARY} more" if len(skipped) > _LISTED_IN_SUMMARY else ""
                lines.append(f"skipped {len(skipped)} of {total} {kind}: {listed}{more}")
        if self.excluded_without_objects:
            lines.append(f"excluded {self.excluded_without_objects} images without objects "
                         f"(classification_localization needs one)")
        if self.truncated_images:
            lines.append(f"{self.truncated_images} images have more than max_objects={self.max_objects} "
                         f"objects: only their {self.max_objects} largest are targets")
        return "\n".join(lines)


def prepare_images(dataset: CocoDataset, task: str, max_objects: int, skip_invalid: bool = False,
                   check_files: bool = True) -> PreparedImages:
    """Check every image and annotation of `dataset` and build the per-image targets."""
    check_task(task)
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1, got {max_objects}")
    result = PreparedImages([], len(dataset.images), len(dataset.annotations), max_objects=max_objects)
    label_map = dataset.label_map
    mask_dir = semantic_mask_dir(dataset) if task == SEMANTIC else None

    def fault(where: str, reason: str, bucket: list[SkippedRecord]) -> None:
        if not skip_invalid:
            raise DatasetError(f"{where}: {reason} (build the pipeline with skip_invalid=True "
                               f"to skip and count such records)")
        bucket.append(SkippedRecord(where, reason))

    for record in dataset.images:
        path = dataset.image_path(record)
        semantic_path = mask_dir / f"{Path(record.file_name).stem}.png" if mask_dir is not None else None
        problem = _files_problem(record, path, semantic_path, check_files)
        if problem is not None:
            fault(str(path), problem, result.skipped_images)
            continue
        kept, crowd = [], []
        for annotation in record.annotations:
            reason = _annotation_problem(annotation, record, needs_mask=task in (INSTANCE, SEMANTIC))
            if reason is not None:
                fault(f"annotation {annotation.id} of image {record.id} ({path})", reason,
                      result.skipped_annotations)
            elif annotation.iscrowd:
                crowd.append(annotation)
            else:
                kept.append((annotation, _clipped_box(annotation, record)))
        if task == CLASSIFICATION_LOCALIZATION and not kept:
            result.excluded_without_objects += 1
            continue
        if len(kept) > max_objects and task != SEMANTIC:  # a semantic map has no object slots
            result.truncated_images += 1
            kept = _largest(kept, max_objects)
        result.images.append(PreparedImage(
            record.id, path, record.height, record.width,
            np.array([box for _, box in kept], np.float32).reshape(-1, 4),
            np.array([label_map.index_of(a.category_id) for a, _ in kept], np.int32),
            tuple(a for a, _ in kept), tuple(crowd), semantic_path))
    return result


def _files_problem(record: ImageRecord, path: Path, semantic_path: Path | None, check_files: bool) -> str | None:
    """Why the image (or its semantic mask PNG) cannot be used, or None."""
    if record.height <= 0 or record.width <= 0:
        return f"image record {record.id} has non-positive size {record.width}x{record.height}"
    if semantic_path is not None and not semantic_path.is_file():
        return f"semantic mask {semantic_path} not found (the semantic mask folder has none for this image)"
    if not check_files:
        return None
    problem = image_file_problem(path, record.height, record.width)
    if problem is None and semantic_path is not None:
        reason = image_file_problem(semantic_path, record.height, record.width)
        problem = f"semantic mask {semantic_path}: {reason}" if reason else None
    return problem


def _annotation_problem(annotation: Annotation, record: ImageRecord, needs_mask: bool) -> str | None:
    x, y, w, h = annotation.bbox
    if not all(math.isfinite(v) for v in annotation.bbox):
        return f"bbox {list(annotation.bbox)} has a non-finite value"
    if w <= 0 or h <= 0:
        return f"bbox {list(annotation.bbox)} has zero or negative width/height"
    if x >= record.width or y >= record.height or x + w <= 0 or y + h <= 0:
        return f"bbox {list(annotation.bbox)} lies outside the {record.width}x{record.height} image"
    if needs_mask:
        return _segmentation_problem(annotation.segmentation, record)
    return None


def _segmentation_problem(segmentation: object, record: ImageRecord) -> str | None:
    """Structural check only (decoding every mask up front would cost minutes on COCO)."""
    if segmentation is None or segmentation == []:
        return None  # no segmentation: the filled box is the mask (`Annotation.mask`)
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
                return "segmentation polygons must be lists of numbers"
        return None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [record.height, record.width]:
            return (f"segmentation RLE size {segmentation['size']} does not match the image's "
                    f"[height, width] [{record.height}, {record.width}]")
        return None
    return "segmentation must be polygons or RLE {size, counts}"


def _clipped_box(annotation: Annotation, record: ImageRecord) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = annotation.box_xyxy
    return (min(max(x0, 0.0), record.width), min(max(y0, 0.0), record.height),
            min(max(x1, 0.0), record.width), min(max(y1, 0.0), record.height))


def _largest(kept: list, count: int) -> list:
    """The `count` largest (box area) of `kept`, in their original order."""
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for _, b in kept]
    chosen = sorted(np.argsort(-np.asarray(areas), kind="stable")[:count])
    return [kept[i] for i in chosen]
