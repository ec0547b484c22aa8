"""Batched class-aware NMS: suppression per class, thresholds, caps, padding, graph mode."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import PAD_CLASS
from detseg.models.ops.nms import NmsConfig, NmsError, batched_nms

# Boxes 0 and 1 overlap (IoU 0.68), box 2 is apart.
BOXES = np.array([[[10, 20, 50, 40], [12, 22, 52, 42], [100, 5, 120, 60]]], np.float32)


def test_overlapping_boxes_of_the_same_class_suppress_each_other():
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]]], np.float32)
    out = batched_nms(BOXES, scores, NmsConfig(iou_threshold=0.5, score_threshold=0.05, max_detections=5))
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(out["boxes"][0, :2], BOXES[0, [0, 2]])
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.7])
    np.testing.assert_array_equal(out["classes"][0, :2], [0, 1])


def test_overlapping_boxes_of_different_classes_are_both_kept():
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.0, 0.0]]], np.float32)
    out = batched_nms(BOXES, scores, NmsConfig(iou_threshold=0.5, score_threshold=0.05, max_detections=5))
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(out["boxes"][0, :2], BOXES[0, :2])
    np.testing.assert_array_equal(out["classes"][0, :2], [0, 1])


def test_a_higher_iou_threshold_keeps_both_boxes():
    scores = np.array([[[0.9], [0.8], [0.0]]], np.float32)
    out = batched_nms(BOXES, scores, NmsConfig(iou_threshold=0.75, score_threshold=0.05, max_detections=5))
    assert int(out["num_detections"][0]) == 2


def test_padding_rows_are_zero_with_the_pad_class():
    scores = np.array([[[0.9], [0.0], [0.0]]], np.float32)
    out = batched_nms(BOXES, scores, NmsConfig(score_threshold=0.05, max_detections=4))
    assert out["boxes"].shape == (1, 4, 4) and out["classes"].dtype == tf.int32
    np.testing.assert_array_equal(out["classes"][0], [0] + [PAD_CLASS] * 3)
    np.testing.assert_array_equal(out["boxes"][0, 1:], np.zeros((3, 4)))
    np.testing.assert_array_equal(out["scores"][0, 1:], np.zeros(3))


def test_score_threshold_and_max_detections():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 500, (1, 40, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + 4], axis=-1)  # 4-px boxes, practically disjoint
    scores = rng.uniform(0, 1, (1, 40, 1)).astype(np.float32)
    out = batched_nms(boxes, scores, NmsConfig(iou_threshold=0.5, score_threshold=0.5, max_detections=100))
    assert int(out["num_detections"][0]) == int(np.sum(scores > 0.5))
    kept = out["scores"][0, :int(out["num_detections"][0])].numpy()
    assert np.all(kept > 0.5) and np.all(np.diff(kept) <= 0)  # sorted by score
    capped = batched_nms(boxes, scores, NmsConfig(iou_threshold=0.5, score_threshold=0.0, max_detections=7))
    assert int(capped["num_detections"][0]) == 7
    np.testing.assert_allclose(capped["scores"][0], np.sort(scores.ravel())[::-1][:7])


def test_each_image_of_a_batch_is_independent_in_graph_mode():
    boxes = np.concatenate([BOXES, BOXES])
    scores = np.array([[[0.9], [0.8], [0.7]], [[0.0], [0.0], [0.6]]], np.float32)
    config = NmsConfig(iou_threshold=0.5, score_threshold=0.05, max_detections=3)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, None])])
    def nms(boxes, scores):
        return batched_nms(boxes, scores, config)

    out = nms(boxes, scores)
    np.testing.assert_array_equal(out["num_detections"], [2, 1])
    np.testing.assert_allclose(out["boxes"][1, 0], BOXES[0, 2])


@pytest.mark.parametrize("kwargs", [{"iou_threshold": 1.5}, {"score_threshold": -0.1},
                                    {"max_detections": 0}, {"max_detections_per_class": 0}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(NmsError):
        NmsConfig(**kwargs)
