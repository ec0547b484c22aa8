"""Evaluate per-image predictions of any task: COCO for detectors, metrics for the others.

This is where a model of any family, however it runs (in memory, as a SavedModel, behind
TF Serving), becomes a COCO results list and a report. A predictor yields
`(image_id, prediction)` per image (original COCO image ids), `prediction` being, by task
(the names are the pipelines' task names; every coordinate is in the ORIGINAL image's
pixels, classes are contiguous indices `0..C-1` of the ground truth's label map):

- "detection": `boxes` `[N, 4]` xyxy, `scores` `[N]`, `classes` `[N]` (`PAD_CLASS` rows
  skipped), optional `num_detections` (only that many rows count) and `class_names` `[N]`.
- "instance": the same plus `masks` `[N, H, W]` (0/1, or probabilities cut at 0.5).
- "semantic": `class_map` int `[H, W]`: 0 background, `i + 1` class `i`; optional
  `label_names` `[C + 1]` (the name of value 0, background, first).
- "classification_localization": `class` (int), `score` (float), `box` `[4]` xyxy;
  optional `class_name`.

The optional names let a predictor that only knows its own class names (a SavedModel)
be checked against the ground truth's: a model trained on other classes is an error,
not a silently wrong report.

Semantic and cls+loc metrics also need the truth per image in original pixels, the
pipelines' targets (`truths[image_id]`): a `uint8 [H, W]` label map (0 background,
`i + 1` class `i`, 255 ignore), or a `(class index, box [4] xyxy)` pair for cls+loc.
Images without a truth (cls+loc: no object) get results but do not count in the metrics.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from detseg.core.contract import (BACKGROUND_NAME, CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, PAD_CLASS,
                                  SEMANTIC, SEMANTIC_BACKGROUND, TASKS)
from detseg.data.coco import CocoDataset, LabelMap, encode_mask
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import SEGM_AREA_PYCOCOTOOLS, GroundTruth, load_ground_truth
from detseg.evaluation.coco_results import Results
from detseg.evaluation.detection_confusion import DEFAULT_IOU_THRESHOLD, DEFAULT_SCORE_THRESHOLD
from detseg.evaluation.detection_report import evaluate_predictions
from detseg.evaluation.localization_metrics import ClassificationLocalizationMetrics
from detseg.evaluation.report_contents import dataset_summary, localization_report, semantic_report
from detseg.evaluation.semantic_metrics import SemanticSegmentationMetrics

IOU_TYPES_OF_TASK = {DETECTION: ("bbox",), INSTANCE: ("bbox", "segm")}
WHOLE_MAP_SCORE = 1.0  # score of a semantic region in the results list (a class map has no scores)

Predicted = Iterable[tuple[int, Mapping[str, Any]]]


def evaluate_task_predictions(gt: GroundTruth, task: str, predicted: Predicted,
                              truths: Mapping[int, Any] | None = None, model: str | None = None,
                              iou_types: Sequence[str] | None = None,
                              confusion_iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                              confusion_score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                              progress: bool | None = None,
                              segm_area: str = SEGM_AREA_PYCOCOTOOLS) -> tuple[Results, dict[str, Any]]:
    """Predictions of `task` (module docstring) -> (COCO results list, report dict).

    detection / instance: COCO `iou_types` (default bbox, + segm for instance) through
    `evaluation.detection_report.evaluate_predictions` (`segm_area` as `evaluate_coco`). semantic: the
    `SemanticSegmentationMetrics` report; results hold one RLE region per class and image.
    classification_localization: the `ClassificationLocalizationMetrics` report; results
    hold one detection per image. `model` names the predictor in the report. Raises
    `DatasetError` for unknown tasks or image ids, class names other than the ground
    truth's, or shapes that do not match the image.
    """
    loaded = load_ground_truth(gt)
    label_map = loaded.dataset.label_map
    checked = _with_checked_names(predicted, task, label_map)
    if task in IOU_TYPES_OF_TASK:
        return evaluate_predictions(loaded, checked, iou_types or IOU_TYPES_OF_TASK[task], model,
                                    confusion_iou_threshold, confusion_score_threshold, progress, segm_area)
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    if truths is None:
        raise DatasetError(f"{task} evaluation needs the ground truth per image (truths)")
    bar = tqdm(checked, total=len(loaded.dataset.images), desc="predicting", unit="img",
               disable=None if progress is None else not progress)
    known = {image.id for image in loaded.dataset.images}
    evaluate = _semantic if task == SEMANTIC else _classification_localization
    results, metrics = evaluate(_known_images(bar, known, loaded.dataset), truths, label_map)
    source = {"dataset": dataset_summary(loaded.dataset), "predictions": model or "predictor",
              "num_detections": len(results), "model": model}
    make_report = semantic_report if task == SEMANTIC else localization_report
    return results, make_report(metrics, source, {"task": task})


def _known_images(predicted: Predicted, known: set[int], dataset: CocoDataset) -> Iterator:
    for image_id, prediction in predicted:
        if int(image_id) not in known:
            source = f" {dataset.source}" if dataset.source else ""
            raise DatasetError(f"predictions refer to image id {image_id} that the annotations{source} "
                               f"do not have")
        yield int(image_id), prediction


def _semantic(predicted: Predicted, truths: Mapping[int, Any], label_map: LabelMap):
    names = [BACKGROUND_NAME] + list(label_map.names)
    metrics = SemanticSegmentationMetrics(len(names), names)
    results: Results = []
    for image_id, prediction in predicted:
        class_map = np.asarray(prediction["class_map"])
        truth = np.asarray(truths[image_id])
        if class_map.shape != truth.shape:
            raise DatasetError(f"image {image_id}: predicted class map is {list(class_map.shape)} but the "
                               f"image is [height, width] {list(truth.shape)}")
        try:
            metrics.update(truth, class_map)
        except DatasetError as error:
            raise DatasetError(f"image {image_id}: {error}") from None
        for value in np.unique(class_map):
            if value != SEMANTIC_BACKGROUND:
                results.append({"image_id": image_id, "category_id": label_map.coco_id(int(value) - 1),
                                "segmentation": encode_mask(class_map == value), "score": WHOLE_MAP_SCORE})
    return results, metrics.result()


def _classification_localization(predicted: Predicted, truths: Mapping[int, Any], label_map: LabelMap):
    metrics = ClassificationLocalizationMetrics(label_map.num_classes, list(label_map.names))
    results: Results = []
    true_classes, true_boxes, pred_classes, pred_boxes = [], [], [], []
    for image_id, prediction in predicted:
        index = int(np.asarray(prediction["class"]).reshape(()))
        if not 0 <= index < label_map.num_classes:
            raise DatasetError(f"image {image_id}: predicted class {index} outside 0..{label_map.num_classes - 1}")
        box = [float(v) for v in np.asarray(prediction["box"], np.float64).reshape(4)]
        results.append({"image_id": image_id, "category_id": label_map.coco_id(index),
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "score": float(np.asarray(prediction["score"]).reshape(()))})
        if image_id in truths:
            true_class, true_box = truths[image_id]
            true_classes.append(int(true_class))
            true_boxes.append(np.asarray(true_box, np.float64).reshape(4))
            pred_classes.append(index)
            pred_boxes.append(box)
    if true_classes:
        metrics.update(true_classes, np.array(true_boxes), pred_classes, np.array(pred_boxes))
    return results, metrics.result()


# ---------------------------------------------------------------------------- class names


def _with_checked_names(predicted: Predicted, task: str, label_map: LabelMap) -> Iterator:
    """`predicted`, failing at the first class name that is not the ground truth's."""
    expected = list(label_map.names)
    for image_id, prediction in predicted:
        for index, name in _named_classes(prediction, task):
            if not 0 <= index < len(expected) or name != expected[index]:
                have = f"'{expected[index]}'" if 0 <= index < len(expected) else "no such class"
                raise DatasetError(
                    f"the model's class {index} is '{name}' but in the annotations it is {have}: the "
                    f"model was trained on other classes ({expected} expected, in this order)")
        yield image_id, prediction


def _named_classes(prediction: Mapping[str, Any], task: str) -> list[tuple[int, str]]:
    """(class index, name) pairs a prediction states about itself; [] when it has no names."""
    if task == SEMANTIC and prediction.get("label_names") is not None:
        # Value 0 of the class map is background, whatever the model calls it; the
        # classes follow it, so a list without a background entry is off by one.
        names = [_text(n) for n in np.asarray(prediction["label_names"]).reshape(-1)]
        return list(enumerate(names[1:]))
    if task == CLASSIFICATION_LOCALIZATION and prediction.get("class_name") is not None:
        return [(int(np.asarray(prediction["class"]).reshape(())), _text(prediction["class_name"]))]
    if task in IOU_TYPES_OF_TASK and prediction.get("class_names") is not None:
        classes = np.asarray(prediction["classes"]).reshape(-1)
        names = np.asarray(prediction["class_names"]).reshape(-1)
        count = len(classes)
        if prediction.get("num_detections") is not None:
            count = min(count, int(np.asarray(prediction["num_detections"]).reshape(())))
        return [(int(c), _text(n)) for c, n in zip(classes[:count], names[:count]) if c != PAD_CLASS]
    return []


def _text(value: Any) -> str:
    value = np.asarray(value).reshape(()).item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
