"""COCO bbox / segm evaluation: pycocotools' own numbers, with per-class detail.

`evaluate_coco` runs pycocotools' COCOeval with its DEFAULT parameters along its own code
path (COCO objects, `loadRes`, `evaluate`, `accumulate`, `summarize`), so the 12 stats
are exactly pycocotools'. What we add is read off the same `eval['precision']`
(`[T=10 IoU thresholds, R=101 recall thresholds, K classes, A=4 area ranges, M=3 maxDets]`)
and `eval['recall']` (`[T, K, A, M]`) arrays, reduced the way `summarize` reduces them:
per-class AP, AP50, AP75, AR100 and precision-recall curves at IoU 0.5 and 0.75.

Object areas (which decide the small / medium / large ranges) are pycocotools' own by
default: `loadRes` takes a detection's area from its `bbox` when the results carry boxes,
from its mask otherwise, even for segm. `segm_area="mask"` is detectron2's convention for
segm: the results' boxes are set aside, so every detection's area is its mask's. The
section says which was used (`object_areas`).

pycocotools marks "nothing to measure" (no ground truth in that class or area range) as -1;
we report those as `None` (JSON null, "n/a" in the report), except in `stats_raw`, which
keeps pycocotools' 12 floats untouched.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from detseg.data.coco import CocoDataset, dataset_from_dict, default_image_dir, read_json
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_results import (IOU_TYPES, MAX_IDS_IN_MESSAGE, ResultsSource, read_coco_results,
                                           require_iou_type)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
NOT_MEASURED = -1  # pycocotools' entry where there is no ground truth to measure against
PR_IOU_THRESHOLDS = (0.5, 0.75)
SEGM_AREA_PYCOCOTOOLS = "pycocotools"  # loadRes: box area when the results carry boxes
SEGM_AREA_MASK = "mask"  # detectron2: mask area, the results' boxes set aside
SEGM_AREAS = (SEGM_AREA_PYCOCOTOOLS, SEGM_AREA_MASK)
OBJECT_AREAS_TEXT = {SEGM_AREA_PYCOCOTOOLS: "object areas: pycocotools default",
                     SEGM_AREA_MASK: "object areas from masks (--segm-area mask)"}


@dataclass(frozen=True)
class LoadedGroundTruth:
    """Ground truth read once: our records, and the COCO dict pycocotools will index."""

    dataset: CocoDataset
    payload: dict[str, Any]


GroundTruth = str | os.PathLike | CocoDataset | LoadedGroundTruth


def load_ground_truth(gt: GroundTruth) -> LoadedGroundTruth:
    """GT path or dataset -> records + COCO dict (reuse it to read a big file only once).

    A path's own JSON goes to pycocotools unchanged (after our structural checks), so the
    numbers equal a direct `COCO(path)` run; a `CocoDataset` goes as `to_dict()`.
    """
    if isinstance(gt, LoadedGroundTruth):
        return gt
    if isinstance(gt, CocoDataset):
        return LoadedGroundTruth(gt, gt.to_dict())
    path = Path(gt)
    payload = read_json(path)
    return LoadedGroundTruth(dataset_from_dict(payload, default_image_dir(path), path), payload)


def evaluate_coco(gt: GroundTruth, results: ResultsSource, iou_type: str = "bbox",
                  progress: bool | None = None, segm_area: str = SEGM_AREA_PYCOCOTOOLS) -> dict[str, Any]:
    """Evaluate COCO `results` against `gt` with pycocotools' COCOeval (default parameters).

    Args:
      gt: COCO instances JSON path, a `CocoDataset`, or `load_ground_truth`'s result.
      results: COCO results JSON path or list (see `evaluation.coco_results`), or
        `read_coco_results`' result.
      iou_type: "bbox" or "segm".
      progress: progress bar on stderr; None shows it only on a terminal.
      segm_area: "pycocotools" (default) or "mask": where segm detections' areas come
        from (module docstring); no effect on bbox.

    Returns a JSON-ready dict: `iou_type`, `num_images`, `num_detections`, `object_areas`
    (segm only: `OBJECT_AREAS_TEXT`), `stats`
    (the 12 `STAT_NAMES` -> float, None where pycocotools gives -1), `stats_raw`
    (COCOeval.stats as 12 floats), `per_class` (one entry per category in COCO id order:
    `index`, `coco_id`, `name`, `num_gt`, `AP`, `AP50`, `AP75`, `AR100`, None without GT),
    and `pr_curves` (`recall`: the 101 recall thresholds; `classes`: per category
    `precision_iou50` / `precision_iou75`, 101 values or None without GT).

    Empty results are evaluated against an empty detection set built directly (pycocotools'
    `loadRes([])` raises): every stat with ground truth is 0, the rest are None.
    Raises `DatasetError` for unreadable files and for detections that break the rules of
    `evaluation.results_checks` or lack what `iou_type` needs.
    """
    if iou_type not in IOU_TYPES:
        raise DatasetError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if segm_area not in SEGM_AREAS:
        raise DatasetError(f"segm_area must be one of {SEGM_AREAS}, got {segm_area!r}")
    loaded = load_ground_truth(gt)
    dataset = loaded.dataset
    payload = _payload_for_pycocotools(loaded.payload, iou_type, dataset)
    checked = read_coco_results(results, dataset)
    require_iou_type(checked, iou_type)
    records = _records_for_load_res(checked.records, iou_type, segm_area)
    # pycocotools prints progress and the summary table to stdout: keep our stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _indexed_coco(payload)
        coco_dt = coco_gt.loadRes(records) if records else _empty_detections(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        _evaluate_with_progress(evaluator, iou_type, progress)
        evaluator.accumulate()
        evaluator.summarize()
    section = {
        "iou_type": iou_type,
        "num_images": len(evaluator.params.imgIds),
        "num_detections": len(records),
        "stats": {name: _measured(value) for name, value in zip(STAT_NAMES, evaluator.stats)},
        "stats_raw": [float(value) for value in evaluator.stats],
        "per_class": _per_class_metrics(evaluator, dataset),
        "pr_curves": _pr_curves(evaluator, dataset),
    }
    if iou_type == "segm":
        section["object_areas"] = OBJECT_AREAS_TEXT[segm_area]
    return section


def _records_for_load_res(records: list[dict[str, Any]], iou_type: str, segm_area: str) -> list[dict[str, Any]]:
    """Fresh copies for `loadRes` (it mutates them), as a direct pycocotools run would get
    them; for segm with `segm_area="mask"` without their boxes, so areas come from masks."""
    drop_boxes = iou_type == "segm" and segm_area == SEGM_AREA_MASK
    return [{k: copy.deepcopy(v) for k, v in record.items() if not (drop_boxes and k == "bbox")}
            for record in records]


def _payload_for_pycocotools(payload: dict[str, Any], iou_type: str, dataset: CocoDataset) -> dict[str, Any]:
    """A shallow copy pycocotools may mutate (it rewrites annotations in place).

    `iscrowd` defaults to 0 as COCO documents it; a missing `area` (needed for the area
    ranges) or, for segm, a missing `segmentation` is an error naming the annotations.
    """
    where = dataset.source or "ground truth"
    annotations = [dict(a) for a in payload["annotations"]]
    for field, needed in (("area", True), ("segmentation", iou_type == "segm")):
        lacking = [a.get("id") for a in annotations if needed and a.get(field) is None]
        if lacking:
            raise DatasetError(f"{where}: annotation(s) {lacking[:MAX_IDS_IN_MESSAGE]} have no "
                               f"'{field}', which {iou_type} evaluation needs")
    for annotation in annotations:
        annotation.setdefault("iscrowd", 0)
    return {**payload, "annotations": annotations}


def _indexed_coco(payload: dict[str, Any]) -> COCO:
    """What `COCO(path)` does after reading the file: keep the dict, build the index."""
    coco = COCO()
    coco.dataset = payload
    coco.createIndex()
    return coco


def _empty_detections(coco_gt: COCO) -> COCO:
    """The result object `loadRes` would build for zero detections, had it not raised."""
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]),
                     "categories": list(coco_gt.dataset["categories"]), "annotations": []}
    empty.createIndex()
    return empty


def _evaluate_with_progress(evaluator: COCOeval, iou_type: str, progress: bool | None) -> None:
    """`evaluator.evaluate()`, counting its per-image calls on a progress bar.

    Instance attributes shadow the two per-image methods that `evaluate` looks up on
    `self`; they call the originals unchanged, so the numbers are untouched.
    """
    params = evaluator.params
    images, classes = len(set(params.imgIds)), len(set(params.catIds))
    total = images * classes * (1 + len(params.areaRng))  # IoUs, then one call per area range
    with tqdm(total=total, desc=f"COCO {iou_type}", unit="step", mininterval=0.5,
              disable=None if progress is None else not progress) as bar:
        for name in ("computeIoU", "evaluateImg"):
            setattr(evaluator, name, _counted(getattr(evaluator, name), bar))
        try:
            evaluator.evaluate()
        finally:
            del evaluator.computeIoU, evaluator.evaluateImg


def _counted(method: Callable[..., Any], bar: tqdm) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        bar.update(1)
        return method(*args)
    return call


def _measured(value: float) -> float | None:
    return None if value == NOT_MEASURED else float(value)


def _mean_of_measured(values: np.ndarray) -> float | None:
    """`summarize`'s reduction: the mean over entries > -1, or None if there are none."""
    valid = values[values > NOT_MEASURED]
    return float(np.mean(valid)) if len(valid) else None


def _summary_indices(evaluator: COCOeval) -> tuple[int, int, dict[float, np.ndarray]]:
    params = evaluator.params
    area_all = params.areaRngLbl.index("all")
    max_dets_100 = params.maxDets.index(100)
    # Found by equality with the linspace entries, as `summarize` finds them.
    thresholds = {t: np.where(t == params.iouThrs)[0] for t in PR_IOU_THRESHOLDS}
    return area_all, max_dets_100, thresholds


def _gt_counts(dataset: CocoDataset) -> dict[int, int]:
    counts = {c.id: 0 for c in dataset.categories}
    for annotation in dataset.annotations:
        if not annotation.iscrowd:
            counts[annotation.category_id] = counts.get(annotation.category_id, 0) + 1
    return counts


def _per_class_metrics(evaluator: COCOeval, dataset: CocoDataset) -> list[dict[str, Any]]:
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    area_all, max100, at = _summary_indices(evaluator)
    names = {c.id: c.name for c in dataset.categories}
    counts = _gt_counts(dataset)
    rows = []
    for k, coco_id in enumerate(int(c) for c in evaluator.params.catIds):
        rows.append({
            "index": k, "coco_id": coco_id, "name": names[coco_id], "num_gt": counts[coco_id],
            "AP": _mean_of_measured(precision[:, :, k, area_all, max100]),
            "AP50": _mean_of_measured(precision[at[0.5], :, k, area_all, max100]),
            "AP75": _mean_of_measured(precision[at[0.75], :, k, area_all, max100]),
            "AR100": _mean_of_measured(recall[:, k, area_all, max100]),
        })
    return rows


def _pr_curves(evaluator: COCOeval, dataset: CocoDataset) -> dict[str, Any]:
    precision = evaluator.eval["precision"]
    area_all, max100, at = _summary_indices(evaluator)
    names = {c.id: c.name for c in dataset.categories}
    classes = []
    for k, coco_id in enumerate(int(c) for c in evaluator.params.catIds):
        curve = {"coco_id": coco_id, "name": names[coco_id]}
        for threshold in PR_IOU_THRESHOLDS:
            values = precision[at[threshold], :, k, area_all, max100].reshape(-1)
            measured = values.size and bool(np.all(values > NOT_MEASURED))
            curve[f"precision_iou{round(threshold * 100)}"] = values.tolist() if measured else None
        classes.append(curve)
    return {"recall": [float(r) for r in evaluator.params.recThrs], "classes": classes}
