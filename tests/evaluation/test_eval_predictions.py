"""Predictor output -> COCO results -> report: the entry any model plugs into."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from eval_fixtures import ground_truth_payload
from detseg.core.contract import PAD_CLASS
from detseg.data.coco import LabelMap, dataset_from_dict
from detseg.evaluation.coco_results import predictions_to_coco_results
from detseg.evaluation.detection_report import evaluate_predictions


def test_boxes_classes_and_masks_become_coco_results():
    label_map = LabelMap((3, 7, 42), ("cat", "dog", "zebra"))
    mask = np.zeros((2, 6, 8), np.float32)
    mask[0, 1:3, 2:5] = 0.9
    mask[0, 4, 4] = 0.4  # below the 0.5 threshold
    prediction = {"boxes": np.array([[2.0, 1.0, 5.0, 3.0], [0, 0, 0, 0]], np.float32),
                  "scores": np.array([0.8, 0.0]), "classes": np.array([2, PAD_CLASS]), "masks": mask}
    (result,) = predictions_to_coco_results([11], [prediction], label_map)
    assert result["image_id"] == 11 and result["category_id"] == 42
    assert result["bbox"] == [2.0, 1.0, 3.0, 2.0] and result["score"] == pytest.approx(0.8)
    assert isinstance(result["segmentation"]["counts"], str)
    decoded = coco_mask.decode({"size": result["segmentation"]["size"],
                                "counts": result["segmentation"]["counts"].encode()})
    assert decoded.sum() == 6 and decoded[1:3, 2:5].all()


def test_num_detections_cuts_padding_rows():
    label_map = LabelMap((5,), ("thing",))
    prediction = {"boxes": np.ones((3, 4)) * [0, 0, 4, 4], "scores": [0.9, 0.8, 0.7], "classes": [0, 0, 0],
                  "num_detections": 2}
    assert len(predictions_to_coco_results([1], [prediction], label_map)) == 2


def _perfect_predictions(dataset):
    """What a perfect detector would return, in detseg's prediction contract."""
    label_map = dataset.label_map
    for image in dataset.images:
        objects = [a for a in image.annotations if not a.iscrowd]
        yield image.id, {
            "boxes": np.array([a.box_xyxy for a in objects], np.float32).reshape(-1, 4),
            "scores": np.linspace(0.9, 0.5, len(objects)),
            "classes": np.array([label_map.index_of(a.category_id) for a in objects], np.int32),
            "masks": np.array([a.mask(image.height, image.width) for a in objects]).reshape(
                -1, image.height, image.width),
        }


def test_a_perfect_predictor_scores_one_with_original_coco_ids():
    dataset = dataset_from_dict(ground_truth_payload(), image_dir=None)
    results, report = evaluate_predictions(dataset, _perfect_predictions(dataset), ("bbox", "segm"),
                                           model="perfect", progress=False)
    assert {r["category_id"] for r in results} == {3, 7, 42}
    for iou_type in ("bbox", "segm"):
        stats = report["coco"][iou_type]["stats"]
        assert all(stats[name] == pytest.approx(1.0) for name in stats), (iou_type, stats)
    assert report["source"]["model"] == "perfect"
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert np.trace(matrix) == matrix.sum() == 7  # every non-crowd object found, nothing spurious
