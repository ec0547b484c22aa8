"""Detection / instance segmentation reports from COCO results or from any predictor.

`build_detection_report` turns ground truth + COCO results into a report dict (COCO
stats per IoU type, per-class metrics, PR curves, confusion matrix); `evaluate_predictions`
does the same for a predictor that yields `(image_id, predictions)` per image, which is
how a Keras model, a SavedModel or a TF Serving client plugs in.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import (SEGM_AREA_PYCOCOTOOLS, GroundTruth, evaluate_coco,
                                         load_ground_truth)
from detseg.evaluation.coco_results import (IOU_TYPES, Results, ResultsSource, collect_coco_results,
                                            iou_types_in, read_coco_results)
from detseg.evaluation.detection_confusion import (DEFAULT_IOU_THRESHOLD, DEFAULT_SCORE_THRESHOLD,
                                                   detection_confusion_matrix)
from detseg.evaluation.report_contents import cocoeval_settings, dataset_summary, new_report


def build_detection_report(gt: GroundTruth, results: ResultsSource,
                           iou_types: Sequence[str] | None = ("bbox",), model: str | None = None,
                           confusion_iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                           confusion_score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                           progress: bool | None = None,
                           segm_area: str = SEGM_AREA_PYCOCOTOOLS) -> dict[str, Any]:
    """Evaluate COCO `results` against `gt` for each of `iou_types` ("bbox", "segm").

    `iou_types=None` takes them from the results' content (`coco_results.iou_types_in`:
    segmentations -> segm, boxes and segmentations -> both, boxes only -> bbox).
    `model` names what made the results (a run directory, a SavedModel, a server URL),
    for the record; `segm_area` is `evaluate_coco`'s. Returns a report dict (see
    `evaluation.report_contents`) with `coco[iou_type]` from `evaluate_coco` and
    `confusion_matrix` from `detection_confusion_matrix` (boxes). Raises `DatasetError`
    as those do; the results are read and checked once, and errors name their file.
    """
    loaded = load_ground_truth(gt)
    checked = read_coco_results(results, loaded.dataset)
    iou_types = tuple(iou_types_in(checked) if iou_types is None else iou_types)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise DatasetError(f"iou types must be some of {IOU_TYPES}, got {list(iou_types)}")
    settings = cocoeval_settings(list(iou_types), segm_area)
    settings["confusion_matrix"] = {"iou_threshold": confusion_iou_threshold,
                                    "score_threshold": confusion_score_threshold}
    coco = {t: evaluate_coco(loaded, checked, t, progress, segm_area) for t in iou_types}
    matrix, labels = detection_confusion_matrix(loaded, checked, confusion_iou_threshold,
                                                confusion_score_threshold)
    source = {"dataset": dataset_summary(loaded.dataset), "predictions": checked.where,
              "num_detections": len(checked.records), "model": model}
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
                         progress: bool | None = None,
                         segm_area: str = SEGM_AREA_PYCOCOTOOLS) -> tuple[Results, dict[str, Any]]:
    """Evaluate a predictor: `predicted` yields `(image_id, predictions)` per image.

    `predictions` follow detseg's contract (see `predictions_to_coco_results`): boxes xyxy
    in the original image's pixels, scores, contiguous class indices, optional masks.
    Classes map to COCO ids through the ground truth's label map. Boxes of zero width or
    height are left out and counted in `report["source"]["zero_size_boxes_left_out"]`.
    Returns the COCO results list (write it with `write_coco_results`) and the report.
    """
    loaded = load_ground_truth(gt)
    results, zero_size = collect_coco_results(predicted, loaded.dataset.label_map,
                                              total=len(loaded.dataset.images), progress=progress)
    report = build_detection_report(loaded, results, iou_types, model, confusion_iou_threshold,
                                    confusion_score_threshold, progress, segm_area)
    report["source"]["zero_size_boxes_left_out"] = zero_size
    return results, report
