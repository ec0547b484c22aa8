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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from detseg.core.atomic_files import write_json_atomic
from detseg.core.contract import MASK_THRESHOLD, PAD_CLASS
from detseg.data.coco import CocoDataset, LabelMap, encode_mask, read_json
from detseg.data.errors import DatasetError
from detseg.evaluation.results_checks import checked_detections

IOU_TYPES = ("bbox", "segm")
MAX_IDS_IN_MESSAGE = 10

Results = list[dict[str, Any]]


@dataclass(frozen=True)
class CheckedResults:
    """Detections read and checked once (`read_coco_results`), and where they came from,
    so that each evaluation of them neither reads nor checks them again."""

    records: Results
    where: str


ResultsSource = str | os.PathLike | Sequence[Mapping[str, Any]] | CheckedResults


def read_coco_results(results: ResultsSource, dataset: CocoDataset) -> CheckedResults:
    """Read (if a path) and check COCO results against `dataset` (`evaluation.results_checks`).

    Raises `DatasetError` naming the file (or "results"), the detection (index and
    image_id) and the field at fault.
    """
    if isinstance(results, CheckedResults):
        return results
    where = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    records = read_json(results) if isinstance(results, (str, os.PathLike)) else results
    return CheckedResults(checked_detections(records, dataset, where), where)


def iou_types_in(results: CheckedResults) -> tuple[str, ...]:
    """The IoU types a results list is made for: its segmentations -> "segm", its boxes and
    segmentations -> both, boxes only (or no detection at all) -> "bbox"."""
    with_masks = any("segmentation" in record for record in results.records)
    with_boxes = any("bbox" in record for record in results.records)
    if with_masks:
        return ("bbox", "segm") if with_boxes else ("segm",)
    return ("bbox",)


def require_iou_type(results: CheckedResults, iou_type: str) -> None:
    """Raise `DatasetError` unless every detection has what `iou_type` evaluation needs:
    a segmentation for "segm"; a bbox, or a segmentation to take it from, for "bbox"."""
    if iou_type not in IOU_TYPES:
        raise DatasetError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if iou_type == "segm":
        lacking = [i for i, record in enumerate(results.records) if "segmentation" not in record]
        if lacking and len(lacking) == len(results.records):
            raise DatasetError(f"{results.where}: segm (mask) evaluation needs segmentations, but the "
                               f"detections hold boxes only; evaluate them with iou type bbox")
        if lacking:
            raise DatasetError(f"{_detection_name(results, lacking[0])}: segm evaluation needs a "
                               f"'segmentation' in every detection")
        return
    for i, record in enumerate(results.records):
        if "bbox" not in record and "segmentation" not in record:
            raise DatasetError(f"{_detection_name(results, i)}: bbox evaluation needs a 'bbox' [x, y, w, h] "
                               f"(or a segmentation to take it from)")


def _detection_name(results: CheckedResults, index: int) -> str:
    return f"{results.where}: detection {index} (image_id {results.records[index]['image_id']})"


def load_coco_results(results: ResultsSource, dataset: CocoDataset, iou_type: str = "bbox") -> Results:
    """Checked copies of COCO results, ready for `iou_type` ("bbox" or "segm") use.

    For "bbox", detections without a box (a masks-only file) get the box of their mask,
    as pycocotools' `loadRes` derives it. Raises `DatasetError` as `read_coco_results` and
    `require_iou_type` do.
    """
    checked = read_coco_results(results, dataset)
    require_iou_type(checked, iou_type)
    records = [copy.deepcopy(record) for record in checked.records]
    if iou_type == "bbox":
        for record in records:
            if "bbox" not in record:
                rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode("ascii")}
                record["bbox"] = [float(v) for v in coco_mask.toBbox(rle)]
    return records


def predictions_to_coco_results(image_ids: Sequence[int], predictions: Sequence[Mapping[str, Any]],
                                label_map: LabelMap) -> Results:
    """Per-image predictions -> a COCO results list (JSON-ready).

    `predictions[i]` belongs to `image_ids[i]` (original COCO image ids) and holds
    `boxes` `[N, 4]` xyxy in the ORIGINAL image's pixels, `scores` `[N]`, `classes` `[N]`
    contiguous class indices (`PAD_CLASS` rows are padding and skipped), optionally
    `num_detections` (only the first that many rows count) and `masks` `[N, H, W]` in the
    original image's pixels (0/1, bool, or float probabilities thresholded at
    `MASK_THRESHOLD`). Boxes become COCO `[x, y, w, h]`, classes COCO category ids via
    `label_map.coco_id`, masks compressed RLE with string counts. A box of zero width or
    height (a prediction clipped away at the image border) cannot match any object and is
    not a valid COCO result: it is left out (`collect_coco_results` counts them).
    """
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
    results: Results = []
    for image_id, prediction in zip(image_ids, predictions):
        results.extend(_image_results(int(image_id), prediction, label_map)[0])
    return results


def _image_results(image_id: int, prediction: Mapping[str, Any], label_map: LabelMap) -> tuple[Results, int]:
    """One image's results, and how many zero-size boxes were left out."""
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
    out, zero_size = [], 0
    for row in range(count):
        if classes[row] == PAD_CLASS:
            continue
        x0, y0, x1, y1 = (float(v) for v in boxes[row])
        if not (x1 > x0 and y1 > y0):
            zero_size += 1
            continue
        result = {"image_id": image_id, "category_id": label_map.coco_id(classes[row]),
                  "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[row])}
        if masks is not None:
            mask = np.asarray(masks[row])
            binary = mask >= MASK_THRESHOLD if np.issubdtype(mask.dtype, np.floating) else mask != 0
            result["segmentation"] = encode_mask(binary.astype(np.uint8))
        out.append(result)
    return out, zero_size


def collect_coco_results(predicted: Iterable[tuple[int, Mapping[str, Any]]], label_map: LabelMap,
                         total: int | None = None, progress: bool | None = None) -> tuple[Results, int]:
    """Results from an iterable of `(image_id, predictions)`, as any predictor yields them,
    and the number of zero-size boxes left out (see `predictions_to_coco_results`).

    This is where a model, a SavedModel or a served model plugs in: it only has to yield
    one `(image_id, predictions)` pair per image (the prediction contract of
    `predictions_to_coco_results`). Shows a progress bar on stderr (`progress=None`: only
    on a terminal).
    """
    results: Results = []
    zero_size = 0
    bar = tqdm(predicted, total=total, desc="predicting", unit="img",
               disable=None if progress is None else not progress)
    for image_id, prediction in bar:
        rows, dropped = _image_results(int(image_id), prediction, label_map)
        results.extend(rows)
        zero_size += dropped
    return results, zero_size


def write_coco_results(results: Results, path: str | os.PathLike) -> Path:
    """Write a results list as COCO results JSON (atomically)."""
    return write_json_atomic(list(results), path)
