"""Weighted box fusion (`models.ops.box_fusion`): hand-computed answers, and agreement with
the reference implementation (`ensemble_boxes.weighted_boxes_fusion` 1.0.9) on random
detections of three weighted members.

The reference is a test-only dependency (`pip install --no-deps ensemble-boxes==1.0.9`);
its package `__init__` imports numba and pandas for other methods, so only its WBF module
(plain numpy) is loaded, from the installed file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from detseg.core.contract import PAD_CLASS
from detseg.models.ops.box_fusion import BoxFusionConfig, BoxFusionError, weighted_box_fusion

# Member A: a class-0 box, a lone class-0 box far away, a class-1 box on the first one.
# Member B: a class-0 box overlapping A's first (IoU 81 / 119 = 0.68 > 0.55), then padding.
BOXES = np.array([[[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10],
                   [1, 1, 11, 11], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.0, 0.0]], np.float32)
CLASSES = np.array([[0, 0, 1, 0, PAD_CLASS, PAD_CLASS]], np.int32)
SLOTS = [3, 3]


def test_overlapping_same_class_boxes_fuse_into_their_score_weighted_mean():
    out = weighted_box_fusion(BOXES, SCORES, CLASSES, SLOTS)
    assert int(out["num_detections"][0]) == 3
    # (0.9 * [0, 0, 10, 10] + 0.6 * [1, 1, 11, 11]) / 1.5; score 1.5 / 2 boxes * min(2 members, 2) / 2.
    np.testing.assert_allclose(out["boxes"][0, 0], [0.4, 0.4, 10.4, 10.4], atol=1e-5)
    # A box only one of two members found scores half its own; the class-1 box stays apart.
    np.testing.assert_allclose(out["scores"][0, :3], [0.75, 0.4, 0.35], atol=1e-6)
    np.testing.assert_array_equal(out["classes"][0, :3], [0, 0, 1])
    np.testing.assert_allclose(out["boxes"][0, 1:3], BOXES[0, [1, 2]], atol=1e-5)
    # Each fused detection's candidates and their shares s / sum(s): 0.9 / 1.5 and 0.6 / 1.5.
    np.testing.assert_allclose(out["fusion_weights"][0, 0], [0.6, 0, 0, 0.4, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out["fusion_weights"][0, 1], [0, 1, 0, 0, 0, 0], atol=1e-6)


def test_member_weights_scale_each_boxs_share_and_the_scores():
    out = weighted_box_fusion(BOXES, SCORES, CLASSES, SLOTS, member_weights=[2.0, 1.0])
    # Confidences 0.9 * 2 = 1.8 and 0.6 * 1: box 0.6 / 2.4 = 0.25 of the way; score 2.4 / 2 * 2 / 3.
    np.testing.assert_allclose(out["boxes"][0, 0], [0.25, 0.25, 10.25, 10.25], atol=1e-5)
    np.testing.assert_allclose(out["scores"][0, :3], [0.8, 1.6 / 3, 1.4 / 3], atol=1e-6)


def test_padding_low_scores_and_invalid_slots_are_left_out_and_outputs_are_padded():
    valid = np.array([[True, True, True, False, True, True]])  # B's box is beyond its num_detections
    out = weighted_box_fusion(BOXES, SCORES, CLASSES, SLOTS, config=BoxFusionConfig(skip_box_threshold=0.75,
                                                                                    max_detections=4), valid=valid)
    assert int(out["num_detections"][0]) == 2  # 0.7 is under the threshold, B's box invalid
    np.testing.assert_allclose(out["boxes"][0, :2], BOXES[0, :2], atol=1e-5)
    np.testing.assert_allclose(out["scores"][0], [0.45, 0.4, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(out["classes"][0], [0, 0, PAD_CLASS, PAD_CLASS])
    np.testing.assert_array_equal(out["boxes"][0, 2:], np.zeros((2, 4)))
    assert out["fusion_weights"].shape == (1, 4, 6)


def test_bad_weights_and_thresholds_are_refused():
    with pytest.raises(BoxFusionError, match="one positive weight per member"):
        weighted_box_fusion(BOXES, SCORES, CLASSES, SLOTS, member_weights=[1.0])
    with pytest.raises(BoxFusionError, match="fill 5 slots"):
        weighted_box_fusion(BOXES, SCORES, CLASSES, [3, 2])
    with pytest.raises(BoxFusionError, match="iou_threshold"):
        BoxFusionConfig(iou_threshold=1.5)


def _reference_wbf():
    spec = importlib.util.find_spec("ensemble_boxes")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the reference ensemble-boxes is not installed: it comes with the dev extra (make install)")
    path = Path(list(spec.submodule_search_locations)[0]) / "ensemble_boxes_wbf.py"
    module_spec = importlib.util.spec_from_file_location("ensemble_boxes_wbf_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.weighted_boxes_fusion


def _random_member(rng: np.random.Generator, centres: np.ndarray, count: int):
    """`count` detections jittered around `centres` (0..1 coordinates), random classes and scores."""
    picks = rng.integers(0, len(centres), count)
    boxes = centres[picks] + rng.normal(0, 0.02, (count, 4))
    boxes = np.clip(np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                    np.maximum(boxes[:, :2], boxes[:, 2:]) + 0.01], axis=1), 0, 1)
    return boxes.astype(np.float32), rng.uniform(0.05, 1, count).astype(np.float32), rng.integers(0, 3, count)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_agrees_with_the_reference_ensemble_boxes_on_random_detections():
    reference = _reference_wbf()
    rng = np.random.default_rng(0)
    weights, count, config = [1.0, 2.0, 0.5], 30, BoxFusionConfig(iou_threshold=0.55, skip_box_threshold=0.1,
                                                                  max_detections=90)
    images = []
    for _ in range(2):
        centres = rng.uniform(0, 0.7, (6, 2))
        centres = np.concatenate([centres, centres + rng.uniform(0.1, 0.3, (6, 2))], axis=1)
        images.append([_random_member(rng, centres, count) for _ in weights])
    stack = lambda part: np.stack([np.concatenate([m[part] for m in members]) for members in images])  # noqa: E731
    out = weighted_box_fusion(stack(0), stack(1), stack(2), [count] * 3, weights, config)
    for row, members in enumerate(images):
        boxes, scores, labels = reference([m[0] for m in members], [m[1] for m in members],
                                          [m[2] for m in members], weights=weights, iou_thr=0.55, skip_box_thr=0.1)
        kept = int(out["num_detections"][row])
        assert kept == len(scores) > 10
        np.testing.assert_allclose(out["scores"][row, :kept], scores, atol=1e-5)
        np.testing.assert_allclose(out["boxes"][row, :kept], boxes, atol=1e-5)
        np.testing.assert_array_equal(out["classes"][row, :kept], labels.astype(int))
