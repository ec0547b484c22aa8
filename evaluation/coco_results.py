"""COCO results: read and check a results file, or build one from any predictor's output.

A COCO results file is a JSON list of detections, one object each:
`{"image_id", "category_id", "score", "bbox": [x, y, w, h]}` for boxes, and
`"segmentation": {"size": [H, W], "counts": "..."}` (compressed RLE, string counts) for
instance masks. Ids are the ORIGINAL COCO image and category ids, never contiguous indices.

`predictions_to_coco_results` is the model-agnostic entry: any predictor whose output
follows detseg's prediction contract (boxes xyxy in the original image's pixels, scores,
contiguous class indices, optional masks) becomes a results list here, so the same
evaluation serves a Keras model, an exported SavedModel or a model behind TF Serving.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from detseg.core.atomic_files import write_json_atomic
from detseg.core.contract import MASK_THRESHOLD, PAD_CLASS
from detseg.data.coco import CocoDataset, LabelMap, encode_mask, read_json
from detseg.data.errors import DatasetError

IOU_TYPES = ("bbox", "segm")
MAX_IDS_IN_MESSAGE = 10

Results = list[dict[str, Any]]


def load_coco_results(results: str | os.PathLike | Sequence[Mapping[str, Any]],
                      dataset: CocoDataset, iou_type: str = "bbox") -> Results:
    """Read (if a path) and check COCO results against `dataset`; return fresh copies.

    The copies are safe to hand to pycocotools' `loadRes`, which mutates its input. For
    `segm`, each record's `bbox` is dropped: COCO's segm results format has none, and
    with one present `loadRes` would take detection areas from the box, not the mask.
    For `bbox`, a record with only a mask gets its box from the mask.

    Raises `DatasetError` naming the file (or "results") and the record or ids at fault:
    not a list, missing fields, non-finite scores, an RLE whose size is not its image's,
    image ids or category ids the annotations do not have.
    """
    if iou_type not in IOU_TYPES:
        raise DatasetError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    where = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    records = read_json(results) if isinstance(results, (str, os.PathLike)) else results
    if not isinstance(records, (list, tuple)):
        raise DatasetError(f"{where}: COCO results must be a JSON list of detections, "
                           f"got {type(records).__name__}")
    sizes = {image.id: (image.height, image.width) for image in dataset.images}
    checked = [_checked_record(i, record, iou_type, sizes, where) for i, record in enumerate(records)]
    _check_known_ids(checked, dataset, where)
    return checked


def _checked_record(index: int, record: Any, iou_type: str, sizes: dict[int, tuple[int, int]],
                    where: str) -> dict[str, Any]:
    at = f"{where}: detection {index}"
    if not isinstance(record, Mapping):
        raise DatasetError(f"{at}: must be an object, got {type(record).__name__}")
    missing = [k for k in ("image_id", "category_id", "score") if k not in record]
    if missing:
        raise DatasetError(f"{at}: missing field(s) {missing}")
    out = copy.deepcopy(dict(record))
    try:
        out["image_id"], out["category_id"] = int(record["image_id"]), int(record["category_id"])
        out["score"] = float(record["score"])
    except (TypeError, ValueError):
        raise DatasetError(f"{at}: image_id, category_id and score must be numbers") from None
    if not math.isfinite(out["score"]):
        raise DatasetError(f"{at}: score is {out['score']}")
    if iou_type == "segm":
        if "segmentation" not in out:
            raise DatasetError(f"{at}: segm evaluation needs a 'segmentation' (RLE) in every detection")
        _check_rle(out["segmentation"], sizes.get(out["image_id"]), at)
        out.pop("bbox", None)
    elif "bbox" in out:  # a segmentation beside it plays no part in box evaluation
        out["bbox"] = _checked_box(out["bbox"], at)
    elif "segmentation" in out:
        _check_rle(out["segmentation"], sizes.get(out["image_id"]), at)
        out["bbox"] = [float(v) for v in coco_mask.toBbox(_rle_for_pycocotools(out["segmentation"]))]
    else:
        raise DatasetError(f"{at}: bbox evaluation needs a 'bbox' [x, y, w, h]")
    return out


def _checked_box(box: Any, at: str) -> list[float]:
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise DatasetError(f"{at}: bbox must be 4 numbers [x, y, w, h], got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise DatasetError(f"{at}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
    return values


def _check_rle(segmentation: Any, image_size: tuple[int, int] | None, at: str) -> None:
    if not (isinstance(segmentation, Mapping) and "size" in segmentation and "counts" in segmentation):
        raise DatasetError(f"{at}: segmentation must be a compressed RLE {{'size': [H, W], 'counts': ...}}")
    if image_size is not None and tuple(int(v) for v in segmentation["size"]) != image_size:
        raise DatasetError(f"{at}: RLE size {list(segmentation['size'])} is not its image's "
                           f"[height, width] {list(image_size)}")


def _rle_for_pycocotools(segmentation: Mapping[str, Any]) -> dict[str, Any]:
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def _check_known_ids(records: Results, dataset: CocoDataset, where: str) -> None:
    image_ids = {image.id for image in dataset.images}
    category_ids = {category.id for category in dataset.categories}
    unknown_images = sorted({r["image_id"] for r in records} - image_ids)
    unknown_categories = sorted({r["category_id"] for r in records} - category_ids)
    faults = []
    if unknown_images:
        faults.append(f"image id(s) {unknown_images[:MAX_IDS_IN_MESSAGE]}"
                      + (f" and {len(unknown_images) - MAX_IDS_IN_MESSAGE} more"
                         if len(unknown_images) > MAX_IDS_IN_MESSAGE else ""))
    if unknown_categories:
        faults.append(f"category id(s) {unknown_categories[:MAX_IDS_IN_MESSAGE]}")
    if faults:
        source = f" {dataset.source}" if dataset.source else ""
        raise DatasetError(f"{where}: detections refer to {' and '.join(faults)} "
                           f"that the annotations{source} do not have")


def predictions_to_coco_results(image_ids: Sequence[int], predictions: Sequence[Mapping[str, Any]],
                                label_map: LabelMap) -> Results:
    """Per-image predictions -> a COCO results list (JSON-ready).

    `predictions[i]` belongs to `image_ids[i]` (original COCO image ids) and holds
    `boxes` `[N, 4]` xyxy in the ORIGINAL image's pixels, `scores` `[N]`, `classes` `[N]`
    contiguous class indices (`PAD_CLASS` rows are padding and skipped), optionally
    `num_detections` (only the first that many rows count) and `masks` `[N, H, W]` in the
    original image's pixels (0/1, bool, or float probabilities thresholded at
    `MASK_THRESHOLD`). Boxes become COCO `[x, y, w, h]`, classes COCO category ids via
    `label_map.coco_id`, masks compressed RLE with string counts.
    """
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
    results: Results = []
    for image_id, prediction in zip(image_ids, predictions):
        results.extend(_image_results(int(image_id), prediction, label_map))
    return results


def _image_results(image_id: int, prediction: Mapping[str, Any], label_map: LabelMap) -> Results:
    boxes = np.asarray(prediction["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(prediction["scores"], np.float64).reshape(-1)
    classes = np.asarray(prediction["classes"]).reshape(-1).astype(np.int64)
    masks = prediction.get("masks")
    count = len(boxes)
    if prediction.get("num_detections") is not None:
        count = min(count, int(np.asarray(prediction["num_detections"]).reshape(())))
    if len(scores) < count or len(classes) < count or (masks is not None and len(masks) < count):
        raise ValueError(f"image {image_id}: boxes, scores, classes (and masks) have different "
                         f"lengths ({len(boxes)}, {len(scores)}, {len(classes)})")
    out = []
    for row in range(count):
        if classes[row] == PAD_CLASS:
            continue
        x0, y0, x1, y1 = (float(v) for v in boxes[row])
        result = {"image_id": image_id, "category_id": label_map.coco_id(classes[row]),
                  "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[row])}
        if masks is not None:
            mask = np.asarray(masks[row])
            binary = mask >= MASK_THRESHOLD if np.issubdtype(mask.dtype, np.floating) else mask != 0
            result["segmentation"] = encode_mask(binary.astype(np.uint8))
        out.append(result)
    return out


def collect_coco_results(predicted: Iterable[tuple[int, Mapping[str, Any]]], label_map: LabelMap,
                         total: int | None = None, progress: bool | None = None) -> Results:
    """Results from an iterable of `(image_id, predictions)`, as any predictor yields them.

    This is where a model, a SavedModel or a served model plugs in: it only has to yield
    one `(image_id, predictions)` pair per image (the prediction contract of
    `predictions_to_coco_results`). Shows a progress bar on stderr (`progress=None`: only
    on a terminal).
    """
    results: Results = []
    bar = tqdm(predicted, total=total, desc="predicting", unit="img",
               disable=None if progress is None else not progress)
    for image_id, prediction in bar:
        results.extend(_image_results(int(image_id), prediction, label_map))
    return results


def write_coco_results(results: Results, path: str | os.PathLike) -> Path:
    """Write a results list as COCO results JSON (atomically)."""
    return write_json_atomic(list(results), path)
