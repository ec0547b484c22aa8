"""Detection confusion matrix with a background class: confusions, misses and spurious boxes.

`matrix[true, predicted]` counts objects; index `C` (the last) is background. A ground-truth
object nobody detected adds to `matrix[its class, C]` (missed); a detection that matches
no object adds to `matrix[C, its class]` (spurious). `matrix[C, C]` is always 0.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from detseg.data.coco import ImageRecord, LabelMap
from detseg.evaluation.box_iou import pairwise_intersection, pairwise_iou
from detseg.evaluation.coco_eval import GroundTruth, load_ground_truth
from detseg.evaluation.coco_results import load_coco_results

BACKGROUND_LABEL = "background"
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_SCORE_THRESHOLD = 0.5


def detection_confusion_matrix(gt: GroundTruth, results: str | os.PathLike | Sequence[Mapping[str, Any]],
                               iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                               score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                               ) -> tuple[np.ndarray, list[str]]:
    """Confusion matrix of COCO detections against ground truth, background included.

    Per image, detections with `score >= score_threshold` are matched greedily in order
    of falling score (ties keep file order) to a not-yet-matched object with box IoU
    `>= iou_threshold`: an object of the detection's own class if one qualifies (so a
    right detection is not booked as a confusion because a neighbour overlaps it more),
    else the one of any class with the highest IoU. Crowd regions are not objects: a
    detection left unmatched that lies mostly inside one (intersection over the
    detection's area `>= iou_threshold`, COCO's crowd rule) is ignored, not spurious.

    Returns `(matrix int64 [C + 1, C + 1], labels)`: rows are true classes, columns
    predicted classes, both in contiguous index order (COCO ids sorted) with
    `BACKGROUND_LABEL` last; `labels` are the class names plus `BACKGROUND_LABEL`.
    """
    dataset = load_ground_truth(gt).dataset
    records = load_coco_results(results, dataset, "bbox")
    label_map = dataset.label_map
    matrix = np.zeros((label_map.num_classes + 1, label_map.num_classes + 1), np.int64)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        if record["score"] >= score_threshold:
            by_image.setdefault(record["image_id"], []).append(record)
    for image in dataset.images:
        _add_image(matrix, image, by_image.get(image.id, []), label_map, iou_threshold)
    return matrix, list(label_map.names) + [BACKGROUND_LABEL]


def _xywh_to_xyxy(boxes: list[list[float]]) -> np.ndarray:
    xywh = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _add_image(matrix: np.ndarray, image: ImageRecord, detections: list[dict[str, Any]],
               label_map: LabelMap, iou_threshold: float) -> None:
    background = label_map.num_classes
    objects = [a for a in image.annotations if not a.iscrowd]
    crowd_boxes = np.array([a.box_xyxy for a in image.annotations if a.iscrowd], np.float64).reshape(-1, 4)
    true_classes = np.array([label_map.index_of(a.category_id) for a in objects], np.int64)
    detections = sorted(detections, key=lambda r: -r["score"])
    det_boxes = _xywh_to_xyxy([r["bbox"] for r in detections])
    det_classes = np.array([label_map.index_of(r["category_id"]) for r in detections], np.int64)
    iou = pairwise_iou(det_boxes, np.array([a.box_xyxy for a in objects], np.float64).reshape(-1, 4))
    in_crowd = _inside_crowd(det_boxes, crowd_boxes, iou_threshold)
    matched = np.zeros(len(objects), bool)
    for d, predicted in enumerate(det_classes):
        candidates = ~matched & (iou[d] >= iou_threshold)
        if not candidates.any():
            if not in_crowd[d]:
                matrix[background, predicted] += 1
            continue
        same_class = candidates & (true_classes == predicted)
        pool = same_class if same_class.any() else candidates
        best = int(np.argmax(np.where(pool, iou[d], -1.0)))
        matched[best] = True
        matrix[true_classes[best], predicted] += 1
    for true_class in true_classes[~matched]:
        matrix[true_class, background] += 1


def _inside_crowd(det_boxes: np.ndarray, crowd_boxes: np.ndarray, threshold: float) -> np.ndarray:
    """`[D]` bool: the detection's area lies at least `threshold` inside some crowd box."""
    if not len(crowd_boxes) or not len(det_boxes):
        return np.zeros(len(det_boxes), bool)
    widths = np.clip(det_boxes[:, 2] - det_boxes[:, 0], 0, None)
    areas = widths * np.clip(det_boxes[:, 3] - det_boxes[:, 1], 0, None)
    inter = pairwise_intersection(det_boxes, crowd_boxes)
    overlap = np.divide(inter, areas[:, None], out=np.zeros_like(inter), where=areas[:, None] > 0)
    return (overlap >= threshold).any(axis=1)
