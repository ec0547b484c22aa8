"""Semantic segmentation metrics from label maps, accumulated batch by batch.

Label maps are integer `[B, H, W]` (or one `[H, W]`) class indices `0..C-1`; in the
ground truth, `SEMANTIC_IGNORE` (255) marks pixels that count for nothing (borders, "void").
Everything derives from one confusion matrix `int64 [C, C]` (`[true, predicted]`) summed
over all pixels seen so far, so the metrics of a dataset do not depend on how it was
batched.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detseg.core.contract import SEMANTIC_IGNORE
from detseg.data.errors import DatasetError


class SemanticSegmentationMetrics:
    """Streaming confusion matrix -> per-class IoU and Dice, mIoU, pixel accuracy.

    Call `update(y_true, y_pred)` per batch, then `result()`. A class that appears neither
    in the ground truth nor in the predictions has IoU and Dice None (no evidence either
    way), and the means are over the classes that have a value.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_label: int = SEMANTIC_IGNORE):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.ignore_label = int(ignore_label)
        self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def reset(self) -> None:
        self.confusion_matrix[:] = 0

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add a batch: `y_true`, `y_pred` integer label maps of equal shape `[B, H, W]` or `[H, W]`.

        Raises `DatasetError` for different shapes, or for labels outside `0..C-1` (the
        ground truth may also hold `ignore_label`; predictions there are not looked at).
        """
        true = np.asarray(y_true).astype(np.int64)
        predicted = np.asarray(y_pred).astype(np.int64)
        if true.shape != predicted.shape:
            raise DatasetError(f"label maps differ in shape: ground truth {true.shape}, "
                               f"prediction {predicted.shape}")
        counted = true != self.ignore_label
        true, predicted = true[counted], predicted[counted]
        self._check_range(true, "ground truth")
        self._check_range(predicted, "prediction")
        cells = np.bincount(true * self.num_classes + predicted, minlength=self.num_classes ** 2)
        self.confusion_matrix += cells.reshape(self.num_classes, self.num_classes)

    def _check_range(self, labels: np.ndarray, what: str) -> None:
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise DatasetError(f"{what} label map holds label(s) {sorted(set(bad.tolist()))[:10]} outside "
                               f"0..{self.num_classes - 1} (ignore label {self.ignore_label})")

    def result(self) -> dict[str, Any]:
        """JSON-ready metrics: `mean_iou`, `pixel_accuracy`, `mean_dice`, `per_class`
        (name, iou, dice, gt_pixels, predicted_pixels), `class_names`, `confusion_matrix`."""
        matrix = self.confusion_matrix
        hits = np.diag(matrix).astype(np.float64)
        gt_pixels, predicted_pixels = matrix.sum(axis=1), matrix.sum(axis=0)
        union = gt_pixels + predicted_pixels - hits
        iou = [float(h / u) if u else None for h, u in zip(hits, union)]
        dice = [float(2 * h / (g + p)) if g + p else None for h, g, p in zip(hits, gt_pixels, predicted_pixels)]
        total = int(matrix.sum())
        return {
            "mean_iou": _mean(iou),
            "pixel_accuracy": float(hits.sum() / total) if total else None,
            "mean_dice": _mean(dice),
            "num_pixels": total,
            "per_class": [{"index": i, "name": name, "iou": iou[i], "dice": dice[i],
                           "gt_pixels": int(gt_pixels[i]), "predicted_pixels": int(predicted_pixels[i])}
                          for i, name in enumerate(self.class_names)],
            "class_names": list(self.class_names),
            "confusion_matrix": matrix.tolist(),
        }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
