"""COCO evaluation of a detector during training: pycocotools' numbers on the val split.

Shared by every detection family (YOLO, SSD, Faster R-CNN, Mask R-CNN). Predictions go
through the same path as `detseg evaluate RUN_DIR` (`training.predictions`): boxes and
masks are mapped back to original pixels and scored against the val annotations as they
are on disk, so the trainer's `evaluation.json` and a later report agree.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from detseg.core.contract import INSTANCE
from detseg.data.coco import CocoDataset, LabelMap
from detseg.evaluation.task_evaluation import evaluate_task_predictions
from detseg.training.predictions import batch_predictions, compiled_predict

REPORTED_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def coco_evaluator(task: str) -> Callable[..., dict[str, Any]]:
    """A `ModelFamily.evaluate` for detectors of pipeline task `task` (detection or instance).

    Returns `{"bbox_AP": ..., "bbox_AP50": ..., ...}` (+ `segm_*` for instance tasks);
    a statistic pycocotools cannot measure (no ground truth in its range) is None.
    """
    def evaluate(model: keras.Model, eval_batches: tf.data.Dataset, label_map: LabelMap,
                 dataset: CocoDataset) -> dict[str, Any]:
        predicted = batch_predictions(compiled_predict(model), eval_batches, task)
        _, report = evaluate_task_predictions(dataset, task, predicted, progress=False)
        metrics: dict[str, Any] = {}
        for iou_type in ("bbox", "segm") if task == INSTANCE else ("bbox",):
            stats = report["coco"][iou_type]["stats"]
            metrics.update({f"{iou_type}_{name}": stats[name] for name in REPORTED_STATS})
        return metrics
    return evaluate
