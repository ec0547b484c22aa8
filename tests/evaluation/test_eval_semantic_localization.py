"""Semantic segmentation and classification+localization metrics on hand-computed cases."""

import numpy as np
import pytest

from detseg.core.contract import SEMANTIC_IGNORE
from detseg.data.errors import DatasetError
from detseg.evaluation.localization_metrics import ClassificationLocalizationMetrics
from detseg.evaluation.semantic_metrics import SemanticSegmentationMetrics

I = SEMANTIC_IGNORE
TRUE_MAP = np.array([[0, 0, 1], [1, 2, I]])
PREDICTED_MAP = np.array([[0, 1, 1], [1, 2, 0]])  # the last pixel is ignored whatever it says


def test_semantic_metrics_by_hand():
    metrics = SemanticSegmentationMetrics(3, ["sky", "road", "car"])
    metrics.update(TRUE_MAP, PREDICTED_MAP)
    result = metrics.result()
    # counted pixels (true, predicted): (0,0) (0,1) (1,1) (1,1) (2,2)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    ious = [row["iou"] for row in result["per_class"]]
    assert ious == pytest.approx([1 / 2, 2 / 3, 1.0])  # TP / (true + predicted - TP)
    assert result["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 5)
    dice = [row["dice"] for row in result["per_class"]]
    assert dice == pytest.approx([2 / 3, 4 / 5, 1.0])  # 2 TP / (true + predicted)
    assert result["mean_dice"] == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)
    assert result["num_pixels"] == 5


def test_semantic_streaming_equals_one_big_batch_and_absent_class_is_none():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=(4, 8, 8))
    true[0, :2] = I
    predicted = rng.integers(0, 3, size=(4, 8, 8))
    whole, streamed = SemanticSegmentationMetrics(4), SemanticSegmentationMetrics(4)
    whole.update(true, predicted)
    for i in range(4):
        streamed.update(true[i:i + 1], predicted[i:i + 1])
    assert streamed.result() == whole.result()
    result = whole.result()
    assert result["per_class"][3]["iou"] is None and result["per_class"][3]["dice"] is None
    assert result["mean_iou"] == pytest.approx(np.mean([r["iou"] for r in result["per_class"][:3]]))
    assert result["num_pixels"] == 4 * 64 - 16
    whole.reset()
    assert whole.result()["mean_iou"] is None and whole.result()["pixel_accuracy"] is None


def test_semantic_rejects_bad_labels_and_shapes():
    metrics = SemanticSegmentationMetrics(3)
    with pytest.raises(DatasetError, match=r"prediction label map holds label\(s\) \[255\]"):
        metrics.update(np.array([[0, 1]]), np.array([[0, I]]))
    with pytest.raises(DatasetError, match=r"ground truth label map holds label\(s\) \[7\]"):
        metrics.update(np.array([[0, 7]]), np.array([[0, 1]]))
    with pytest.raises(DatasetError, match="differ in shape"):
        metrics.update(np.zeros((2, 2)), np.zeros((2, 3)))
    assert metrics.confusion_matrix.sum() == 0  # nothing half-added


def test_classification_localization_by_hand():
    metrics = ClassificationLocalizationMetrics(2, ["cat", "dog"])
    box = [0, 0, 10, 10]
    metrics.update([0, 1], [box, box], [0, 1], [box, [0, 0, 4, 10]])  # IoU 1.0 and 0.4
    scores = np.array([[0.7, 0.3], [0.2, 0.8]])  # class scores: argmax 0 (wrong), 1 (right)
    metrics.update([1, 1], [box, box], scores, [box, [0, 0, 5, 10]])  # IoU 1.0 and 0.5
    result = metrics.result()
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["mean_iou"] == pytest.approx((1.0 + 0.4 + 1.0 + 0.5) / 4)
    # right class AND IoU >= 0.5: sample 1 (1.0) and sample 4 (0.5 exactly)
    assert result["localization_accuracy"] == pytest.approx(2 / 4)
    assert result["confusion_matrix"] == [[1, 0], [1, 2]]
    assert result["num_samples"] == 4


def test_classification_localization_errors_and_empty():
    metrics = ClassificationLocalizationMetrics(2)
    assert metrics.result()["accuracy"] is None
    with pytest.raises(DatasetError, match="batch sizes differ"):
        metrics.update([0, 1], [[0, 0, 1, 1]], [0, 1], [[0, 0, 1, 1]] * 2)
    with pytest.raises(DatasetError, match=r"predicted classes \[2\] outside 0..1"):
        metrics.update([0], [[0, 0, 1, 1]], [2], [[0, 0, 1, 1]])
