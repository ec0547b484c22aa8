"""Example pictures for the report: ground truth and predictions side by side.

Drawn with `data.draw`; one PNG per image, `ground truth | prediction`, colours by class
so the same class looks the same on both sides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from detseg.data.coco import CocoDataset, ImageRecord, decode_segmentation
from detseg.data.draw import draw_annotations, save_png, side_by_side
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_results import load_coco_results

DEFAULT_EXAMPLE_SCORE = 0.5
EXAMPLES_DIR = "examples"
MIN_PANEL_WIDTH = 256  # smaller images are enlarged (whole pixels) so labels stay readable


def render_examples(dataset: CocoDataset, results: str | os.PathLike | Sequence[Mapping[str, Any]],
                    out_dir: str | os.PathLike, num_images: int = 4,
                    score_threshold: float = DEFAULT_EXAMPLE_SCORE, with_masks: bool = False) -> list[Path]:
    """Write `out_dir/examples/image_<id>.png` for the first `num_images` images (dataset
    order) that have ground truth objects or detections; return the paths.

    Detections below `score_threshold` are not drawn. `with_masks` also draws instance
    masks (ground truth segmentations and the results' RLE). Image files are read from
    `dataset.image_dir`; a missing or unreadable one is a `DatasetError` naming it.
    """
    records = load_coco_results(results, dataset, "bbox")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        if record["score"] >= score_threshold:
            by_image.setdefault(record["image_id"], []).append(record)
    chosen = [image for image in dataset.images if image.annotations or image.id in by_image][:num_images]
    written = []
    for image in chosen:
        pixels = _read_rgb(dataset.image_path(image))
        scale = -(-MIN_PANEL_WIDTH // pixels.shape[1]) if pixels.shape[1] < MIN_PANEL_WIDTH else 1
        pixels = _enlarged(pixels, scale)
        truth = _draw_truth(pixels, scale, image, dataset, with_masks)
        predicted = _draw_detections(pixels, scale, image, by_image.get(image.id, []), dataset, with_masks)
        panel = side_by_side([truth, predicted], ["ground truth", f"prediction (score >= {score_threshold:g})"])
        written.append(save_png(panel, Path(out_dir) / EXAMPLES_DIR / f"image_{image.id}.png"))
    return written


def _enlarged(pixels: np.ndarray, scale: int) -> np.ndarray:
    """`[H, W, ...]` -> `[H * scale, W * scale, ...]`, each pixel a `scale` x `scale` block."""
    return pixels if scale == 1 else np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found (pass the image folder)") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from None


def _draw_truth(pixels: np.ndarray, scale: int, image: ImageRecord, dataset: CocoDataset,
                with_masks: bool) -> np.ndarray:
    label_map = dataset.label_map
    objects = list(image.annotations)
    classes = [label_map.index_of(a.category_id) for a in objects]
    labels = [label_map.name(c) + (" (crowd)" if a.iscrowd else "") for c, a in zip(classes, objects)]
    masks = None
    if with_masks:
        masks = np.array([_enlarged(a.mask(image.height, image.width), scale) for a in objects], np.uint8)
        masks = masks.reshape(-1, *pixels.shape[:2])
    return draw_annotations(pixels, image.boxes_xyxy() * scale, labels, masks=masks, class_ids=classes)


def _draw_detections(pixels: np.ndarray, scale: int, image: ImageRecord, detections: list[dict[str, Any]],
                     dataset: CocoDataset, with_masks: bool) -> np.ndarray:
    label_map = dataset.label_map
    classes = [label_map.index_of(d["category_id"]) for d in detections]
    xywh = np.array([d["bbox"] for d in detections], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale
    masks = None
    if with_masks:
        empty = np.zeros((image.height, image.width), np.uint8)
        masks = np.array([_enlarged(decode_segmentation(d["segmentation"], image.height, image.width)
                                    if "segmentation" in d else empty, scale) for d in detections], np.uint8)
        masks = masks.reshape(-1, *pixels.shape[:2])
    return draw_annotations(pixels, boxes, [label_map.name(c) for c in classes],
                            scores=[d["score"] for d in detections], masks=masks, class_ids=classes)
