"""`EvaluationCallback`: the task's real metric on the validation split every N epochs, in `logs`.

Keras' own validation reports losses and the model's batch metrics in the letterbox
frame. This callback runs the full evaluation instead: predictions mapped back to the
original images (`training.predictions`), scored by `evaluation.task_evaluation`, i.e.
pycocotools' COCO mAP for detectors, mIoU for semantic segmentation, localization
accuracy for cls+loc. The numbers equal what `detseg evaluate RUN_DIR` reports on the
same images. They go into the epoch's `logs` dict, so every callback AFTER this one in
the list records them: Keras' `CSVLogger` and `TensorBoard`, `training.callbacks.MetricsCsv`
and `ScalarEventLog`, and checkpointing / early stopping on e.g. `val_coco_AP`.

Keys added (`prefix` + name), by task:

    detection                     val_coco_AP, val_coco_AP50
    instance                      val_coco_AP, val_coco_AP50, val_coco_segm_AP, val_coco_segm_AP50
    semantic                      val_mIoU, val_pixel_accuracy
    classification_localization   val_loc_accuracy, val_cls_accuracy, val_box_mIoU

A value pycocotools cannot measure (no ground truth) is NaN. On epochs without an
evaluation the keys are absent: `MetricsCsv` leaves the cell empty, but Keras'
`CSVLogger` fixes its columns at the first epoch, so use `every=1` with it (or make the
first epoch evaluate), and monitor these keys for early stopping only with `every=1`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import keras

from detseg.core.contract import CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, SEMANTIC, check_task
from detseg.data.coco import CocoDataset
from detseg.evaluation.coco_eval import load_ground_truth
from detseg.evaluation.task_evaluation import evaluate_task_predictions
from detseg.pipelines.dataset import build_eval_dataset
from detseg.training.predictions import (DEFAULT_BATCH_SIZE, DEFAULT_MAX_OBJECTS, batch_predictions, compiled_predict,
                                         eval_targets)

DEFAULT_PREFIX = "val_"

# Logged name -> where it is in the report, per task.
_COCO_BBOX = {"coco_AP": ("coco", "bbox", "stats", "AP"), "coco_AP50": ("coco", "bbox", "stats", "AP50")}
_COCO_SEGM = {"coco_segm_AP": ("coco", "segm", "stats", "AP"), "coco_segm_AP50": ("coco", "segm", "stats", "AP50")}
LOGGED_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    DETECTION: _COCO_BBOX,
    INSTANCE: {**_COCO_BBOX, **_COCO_SEGM},
    SEMANTIC: {"mIoU": ("semantic", "mean_iou"), "pixel_accuracy": ("semantic", "pixel_accuracy")},
    CLASSIFICATION_LOCALIZATION: {
        "loc_accuracy": ("classification_localization", "localization_accuracy"),
        "cls_accuracy": ("classification_localization", "accuracy"),
        "box_mIoU": ("classification_localization", "mean_iou")},
}


def logged_metrics(task: str, report: dict[str, Any], prefix: str = DEFAULT_PREFIX) -> dict[str, float]:
    """The headline numbers of an evaluation `report` of `task`, as `{prefix + name: float}` (None -> NaN)."""
    values = {}
    for name, path in LOGGED_METRICS[check_task(task)].items():
        value: Any = report
        for key in path:
            value = value[key]
        values[prefix + name] = math.nan if value is None else float(value)
    return values


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates on `dataset` after every `every`-th epoch (and the last) and adds the numbers to `logs`.

    Args:
      dataset: the validation split (`CocoDataset`), images on disk.
      task: the family's pipeline task (`detseg.core.contract.TASKS`).
      image_size: the model's square input size S.
      every: evaluate after epochs `every`, `2 * every`, ... (1-based) and after the last.
      batch_size: eval batch size (the pipeline pads the last batch; no retracing).
      model: the model to evaluate when it is not the one being trained: stage 1 trains a
        head on cached features, so give the pixel-input model sharing that head.
      prefix: put before every logged name (default "val_").
      log: called with a one-line summary after each evaluation (e.g. the trainer's log).
    """

    def __init__(self, dataset: CocoDataset, task: str, image_size: int, every: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, model: keras.Model | None = None,
                 prefix: str = DEFAULT_PREFIX, log: Callable[[str], None] | None = None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"evaluation every {every} epochs: must be a positive number of epochs")
        self.dataset = dataset
        self.task = check_task(task)
        self.every = int(every)
        self.prefix = prefix
        self.log = log
        self.evaluated_model = model
        # Built once: the batches are re-iterated and the predict function traced once.
        self._batches = build_eval_dataset(dataset, task, image_size, batch_size, max_objects=DEFAULT_MAX_OBJECTS)
        self._truths = eval_targets(dataset, task)
        self._ground_truth = load_ground_truth(dataset)
        self._predict = None
        self.last_report: dict[str, Any] | None = None

    def _due(self, epoch: int) -> bool:
        done = epoch + 1
        return done % self.every == 0 or done == (self.params or {}).get("epochs")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self._due(epoch):
            return
        values = self.evaluate()
        logs.update(values)
        if self.log is not None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            self.log(f"epoch {epoch + 1}: {shown} on {len(self.dataset.images)} images")

    def evaluate(self) -> dict[str, float]:
        """Evaluate now; returns the logged numbers (the full report is `last_report`)."""
        if self._predict is None:
            self._predict = compiled_predict(self.evaluated_model or self.model)
        predicted = batch_predictions(self._predict, self._batches, self.task)
        _, report = evaluate_task_predictions(self._ground_truth, self.task, predicted, self._truths,
                                              model="evaluation callback", progress=False)
        self.last_report = report
        return logged_metrics(self.task, report, self.prefix)
