"""Detection / instance segmentation reports from COCO results or from any predictor.

`build_detection_report` turns ground truth + COCO results into a report dict (COCO
stats per IoU type, per-class metrics, PR curves, confusion matrix); `evaluate_predictions`
does the same for a predictor that yields `(image_id, predictions)` per image, which is
how a Keras model, a SavedModel or a TF Serving client plugs in.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import GroundTruth, evaluate_coco, load_ground_truth
from detseg.evaluation.coco_results import IOU_TYPES, Results, collect_coco_results
from detseg.evaluation.detection_confusion import (DEFAULT_IOU_THRESHOLD, DEFAULT_SCORE_THRESHOLD,
                                                   detection_confusion_matrix)
from detseg.evaluation.report_contents import cocoeval_settings, dataset_summary, new_report


def build_detection_report(gt: GroundTruth, results: str | os.PathLike | Sequence[Mapping[str, Any]],
                           iou_types: Sequence[str] = ("bbox",), model: str | None = None,
                           confusion_iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                           confusion_score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                           progress: bool | None = None) -> dict[str, Any]:
    """Evaluate COCO `results` against `gt` for each of `iou_types` ("bbox", "segm").

    `model` names what made the results (a run directory, a SavedModel, a server URL),
    for the record. Returns a report dict (see `evaluation.report_contents`) with
    `coco[iou_type]` from `evaluate_coco` and `confusion_matrix` from
    `detection_confusion_matrix` (boxes). Raises `DatasetError` as those do.
    """
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise DatasetError(f"iou types must be some of {IOU_TYPES}, got {list(iou_types)}")
    loaded = load_ground_truth(gt)
    where = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    settings = cocoeval_settings(list(iou_types))
    settings["confusion_matrix"] = {"iou_threshold": confusion_iou_threshold,
                                    "score_threshold": confusion_score_threshold}
    # Each evaluation reads and checks the results itself, so errors name the file.
    coco = {t: evaluate_coco(loaded, results, t, progress) for t in iou_types}
    matrix, labels = detection_confusion_matrix(loaded, results, confusion_iou_threshold,
                                                confusion_score_threshold)
    source = {"dataset": dataset_summary(loaded.dataset), "predictions": where,
              "num_detections": coco[iou_types[0]]["num_detections"], "model": model}
    report = new_report("detection", source, settings)
    report["coco"] = coco
    report["confusion_matrix"] = {"matrix": matrix.tolist(), "labels": labels,
                                  "iou_threshold": confusion_iou_threshold,
                                  "score_threshold": confusion_score_threshold}
    return report


def evaluate_predictions(gt: GroundTruth, predicted: Iterable[tuple[int, Mapping[str, Any]]],
                         iou_types: Sequence[str] = ("bbox",), model: str | None = None,
                         confusion_iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                         confusion_score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                         progress: bool | None = None) -> tuple[Results, dict[str, Any]]:
    """Evaluate a predictor: `predicted` yields `(image_id, predictions)` per image.

    `predictions` follow detseg's contract (see `predictions_to_coco_results`): boxes xyxy
    in the original image's pixels, scores, contiguous class indices, optional masks.
    Classes map to COCO ids through the ground truth's label map. Returns the COCO results
    list (write it with `write_coco_results`) and the report.
    """
    loaded = load_ground_truth(gt)
    results = collect_coco_results(predicted, loaded.dataset.label_map, total=len(loaded.dataset.images),
                                   progress=progress)
    report = build_detection_report(loaded, results, iou_types, model, confusion_iou_threshold,
                                    confusion_score_threshold, progress)
    return results, report
