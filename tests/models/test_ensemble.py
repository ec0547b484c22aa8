"""`models.ensemble.EnsembleModel`: hand-computed merges for every task, and an ensemble
of one member predicting exactly what the member predicts (the shared YOLO smoke run)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import DETECTION, PAD_CLASS
from detseg.models.ensemble import (EnsembleError, EnsembleModel, average_classification_localization,
                                    average_semantic, fuse_detections)
from detseg.models.ops.box_fusion import BoxFusionConfig


def _detections(box, score, mask_rows, count=1, slots=3):
    """One member's padded detection dict: `count` real detections of class 0, a 4 x 4 mask each."""
    boxes = np.zeros((1, slots, 4), np.float32)
    boxes[0, :count] = box
    scores = np.zeros((1, slots), np.float32)
    scores[0, :count] = score
    classes = np.full((1, slots), PAD_CLASS, np.int32)
    classes[0, :count] = 0
    masks = np.zeros((1, slots, 4, 4), np.float32)
    masks[0, :count, mask_rows] = 1.0
    return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": np.array([count], np.int32),
            "masks": masks}


def test_fused_detections_average_their_candidates_masks_with_the_box_weights():
    first = _detections([0, 0, 10, 10], 0.9, slice(0, 2))
    second = _detections([1, 1, 11, 11], 0.6, slice(1, 4))
    second["scores"][0, 1] = 0.5  # a score beyond num_detections: padding, not a detection
    second["classes"][0, 1] = 0
    out = fuse_detections([first, second], [1.0, 1.0], BoxFusionConfig())
    assert int(out["num_detections"][0]) == 1 and out["masks"].shape == (1, 3, 4, 4)
    np.testing.assert_allclose(out["boxes"][0, 0], [0.4, 0.4, 10.4, 10.4], atol=1e-5)
    np.testing.assert_allclose(out["scores"][0, 0], 0.75, atol=1e-6)
    # Rows 0 only in the first (share 0.6), row 1 in both, rows 2-3 only in the second (0.4).
    np.testing.assert_allclose(out["masks"][0, 0, :, 0], [0.6, 1.0, 0.4, 0.4], atol=1e-6)
    np.testing.assert_array_equal(out["masks"][0, 1:], 0.0)


def test_semantic_and_clsloc_members_average_their_probabilities_and_boxes():
    first = {"probabilities": np.array([[[[0.7, 0.3]]]], np.float32)}
    second = {"logits": np.log(np.array([[[[0.1, 0.9]]]], np.float32))}  # softmax gives 0.1, 0.9
    out = average_semantic([first, second], [3.0, 1.0])
    np.testing.assert_allclose(out["probabilities"][0, 0, 0], [0.55, 0.45], atol=1e-6)
    assert int(out["class_map"][0, 0, 0]) == 0
    out = average_classification_localization(
        [{"class_probabilities": np.array([[0.2, 0.8]], np.float32), "box": np.array([[0, 0, 10, 10]], np.float32)},
         {"class_probabilities": np.array([[0.6, 0.4]], np.float32), "box": np.array([[2, 4, 12, 14]], np.float32)}],
        [1.0, 1.0])
    np.testing.assert_allclose(out["class_probabilities"], [[0.4, 0.6]], atol=1e-6)
    np.testing.assert_allclose(out["box"], [[1, 2, 11, 12]], atol=1e-6)


@pytest.fixture(scope="module")
def yolo_member(smoke_run):
    from detseg.training.run_model import load_run_model

    return load_run_model(smoke_run("yolo").result.run_dir)


def test_an_ensemble_of_one_member_predicts_what_the_member_predicts(yolo_member):
    pixels = tf.random.stateless_uniform([2, yolo_member.image_size, yolo_member.image_size, 3], [1, 2], 0, 255)
    expected = yolo_member.model.predict_step(pixels)
    assert int(tf.reduce_sum(expected["num_detections"])) > 0
    got = EnsembleModel([yolo_member.model], DETECTION).predict_step(pixels)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_config_round_trips_and_bad_members_are_refused(yolo_member):
    ensemble = EnsembleModel([yolo_member.model, yolo_member.model], DETECTION, weights=[2, 1],
                             fusion=BoxFusionConfig(iou_threshold=0.6))
    config = ensemble.get_config()
    rebuilt = EnsembleModel.from_config(config).get_config()
    assert {k: v for k, v in rebuilt.items() if k != "members"} == {k: v for k, v in config.items() if k != "members"}
    assert [m["class_name"] for m in rebuilt["members"]] == ["YoloDetector"] * 2
    assert (rebuilt["weights"], rebuilt["fusion"]["iou_threshold"]) == ([2.0, 1.0], 0.6)
    with pytest.raises(EnsembleError, match="one positive weight per member"):
        EnsembleModel([yolo_member.model], DETECTION, weights=[1, 1])
    with pytest.raises(EnsembleError, match="task must be one of"):
        EnsembleModel([yolo_member.model], "detect")
