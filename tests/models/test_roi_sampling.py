"""Balanced sampling and RoI sampling: counts, label codes, ordering, ground truth added."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from detseg.models.ops.box_coding import encode_center_size
from detseg.models.ops.roi_sampling import IGNORE, append_ground_truth, balanced_sample_mask, sample_rois


def _counts(mask) -> list[int]:
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1).numpy().tolist()


def test_positives_are_capped_and_negatives_fill_the_sample():
    positive = np.zeros((3, 100), bool)
    negative = np.zeros((3, 100), bool)
    positive[0, :40], negative[0, 40:] = True, True     # plenty of both
    positive[1, :3], negative[1, 3:] = True, True       # few positives: negatives top up
    positive[2, :5], negative[2, 5:10] = True, True     # few of both: take all
    pos, neg = balanced_sample_mask(positive, negative, 20, 0.25, keras.random.SeedGenerator(1))
    assert _counts(pos) == [5, 3, 5]
    assert _counts(neg) == [15, 17, 5]
    assert not np.any(pos.numpy() & ~positive) and not np.any(neg.numpy() & ~negative)


def test_sampling_is_random_but_seeded():
    positive = np.ones((1, 50), bool)
    first, _ = balanced_sample_mask(positive, ~positive, 10, 0.5, keras.random.SeedGenerator(3))
    again, _ = balanced_sample_mask(positive, ~positive, 10, 0.5, keras.random.SeedGenerator(3))
    other, _ = balanced_sample_mask(positive, ~positive, 10, 0.5, keras.random.SeedGenerator(4))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


def test_ground_truth_is_appended_and_padding_becomes_empty():
    proposals = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    gt = tf.constant([[[5.0, 5.0, 20.0, 20.0], [-1.0, -1.0, -1.0, -1.0]]])
    candidates = append_ground_truth(proposals, gt, tf.constant([[True, False]]))
    np.testing.assert_array_equal(candidates.numpy()[0], [[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 0, 0]])


def _rois_example():
    # Image 0: one GT of class 2 and proposals: an exact copy, a shifted one (IoU 0.6),
    # a far one (IoU 0); image 1: no objects at all.
    proposals = np.zeros((2, 6, 4), np.float32)
    proposals[0, :3] = [[10, 10, 50, 50], [10, 0, 50, 40], [60, 60, 90, 90]]
    proposals[1, :2] = [[0, 0, 30, 30], [40, 40, 60, 60]]
    gt_boxes = np.full((2, 2, 4), -1.0, np.float32)
    gt_boxes[0, 0] = [10, 10, 50, 50]
    gt_classes = np.full((2, 2), -1, np.int32)
    gt_classes[0, 0] = 2
    return tf.constant(proposals), tf.constant(gt_boxes), tf.constant(gt_classes)


def test_sample_rois_codes_order_and_targets():
    proposals, gt_boxes, gt_classes = _rois_example()
    sampled = sample_rois(proposals, gt_boxes, gt_classes, gt_classes >= 0, num_classes=3, num_rois=6,
                          positive_fraction=0.5, seed=keras.random.SeedGenerator(0))
    classes = sampled["classes"].numpy()
    # Image 0: positives = proposal copy, shifted proposal (IoU 0.6) and the appended GT.
    assert sorted(classes[0, :3].tolist()) == [2, 2, 2]
    assert classes[0, 3].tolist() == 3                       # the far proposal: background (C = 3)
    assert classes[0, 4:].tolist() == [IGNORE, IGNORE]       # zero-size rows are never sampled
    assert sampled["positive"].numpy()[0].tolist() == [True] * 3 + [False] * 3
    # Image 1 has no objects: its two real proposals are background, nothing is positive.
    assert classes[1].tolist() == [3, 3] + [IGNORE] * 4
    assert not sampled["positive"].numpy()[1].any()
    # Box targets: deltas of the GT w.r.t. each positive RoI, zero elsewhere.
    rois = sampled["rois"].numpy()[0, :3]
    expected = encode_center_size(np.repeat(gt_boxes.numpy()[:1, :1], 3, axis=1)[0], rois,
                                  (0.1, 0.1, 0.2, 0.2)).numpy()
    np.testing.assert_allclose(sampled["box_targets"].numpy()[0, :3], expected, atol=1e-5)
    np.testing.assert_array_equal(sampled["box_targets"].numpy()[0, 3:], 0.0)
    assert sampled["matched_gt"].numpy()[0, :3].tolist() == [0, 0, 0]


def test_sample_rois_respects_the_positive_fraction():
    proposals, gt_boxes, gt_classes = _rois_example()
    sampled = sample_rois(proposals, gt_boxes, gt_classes, gt_classes >= 0, num_classes=3, num_rois=4,
                          positive_fraction=0.25, seed=keras.random.SeedGenerator(0))
    assert _counts(sampled["positive"]) == [1, 0]
    # 1 positive + the single negative of image 0; image 1 keeps its two negatives.
    assert (sampled["classes"].numpy() == 3).sum(axis=1).tolist() == [1, 2]
