"""Classification + localization metrics (one object per image), accumulated batch by batch.

Matches the batch contract `{"class": int32 [B], "box": float32 [B, 4]}`: boxes are xyxy
absolute pixels; predicted classes are indices `[B]` or class scores `[B, C]` (argmax).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detseg.data.errors import DatasetError
from detseg.evaluation.box_iou import paired_iou

LOCALIZATION_IOU_THRESHOLD = 0.5


class ClassificationLocalizationMetrics:
    """Accuracy, mean box IoU, localization accuracy and a class confusion matrix.

    Localization accuracy counts an image as right when the class is right AND the
    predicted box has IoU `>= iou_threshold` with the true box. Mean IoU is over all
    images, whatever the class.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 iou_threshold: float = LOCALIZATION_IOU_THRESHOLD):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._iou_sum = 0.0
        self._localized = 0

    def update(self, true_classes: Any, true_boxes: Any, pred_classes: Any, pred_boxes: Any) -> None:
        """Add a batch: classes `[B]` (or predicted scores `[B, C]`), boxes `[B, 4]` xyxy pixels."""
        true = np.asarray(true_classes).reshape(-1).astype(np.int64)
        predicted = np.asarray(pred_classes)
        if predicted.ndim == 2:
            predicted = predicted.argmax(axis=1)
        predicted = predicted.reshape(-1).astype(np.int64)
        true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
        pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
        sizes = {len(true), len(predicted), len(true_boxes), len(pred_boxes)}
        if len(sizes) != 1:
            raise DatasetError(f"batch sizes differ: true classes {len(true)}, predicted classes "
                               f"{len(predicted)}, true boxes {len(true_boxes)}, "
                               f"predicted boxes {len(pred_boxes)}")
        for labels, what in ((true, "true"), (predicted, "predicted")):
            bad = labels[(labels < 0) | (labels >= self.num_classes)]
            if bad.size:
                raise DatasetError(f"{what} classes {sorted(set(bad.tolist()))[:10]} "
                                   f"outside 0..{self.num_classes - 1}")
        iou = paired_iou(true_boxes, pred_boxes)
        np.add.at(self.confusion_matrix, (true, predicted), 1)
        self._iou_sum += float(iou.sum())
        self._localized += int(np.count_nonzero((true == predicted) & (iou >= self.iou_threshold)))

    def result(self) -> dict[str, Any]:
        """JSON-ready: `accuracy`, `mean_iou`, `localization_accuracy` (None before any
        update), `num_samples`, `iou_threshold`, `class_names`, `confusion_matrix` (`[true, predicted]`)."""
        count = int(self.confusion_matrix.sum())

        def per_sample(total: float) -> float | None:
            return float(total / count) if count else None

        return {
            "accuracy": per_sample(np.trace(self.confusion_matrix)),
            "mean_iou": per_sample(self._iou_sum),
            "localization_accuracy": per_sample(self._localized),
            "num_samples": count,
            "iou_threshold": self.iou_threshold,
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion_matrix.tolist(),
        }
