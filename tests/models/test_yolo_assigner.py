"""Task-aligned assignment and the YOLO losses on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from detseg.models.yolo.assigner import points_inside_boxes, task_aligned_assign
from detseg.models.yolo.loss import dfl_distances, distribution_focal_loss, yolo_losses

POINTS = np.array([[5, 5], [15, 5], [5, 15], [25, 25]], np.float32)
GT_BOX = [0.0, 0.0, 20.0, 20.0]
# Predicted boxes: IoU with GT_BOX 1, 0.25, 0.5, and one box far outside.
PRED = np.array([[[0, 0, 20, 20], [0, 0, 10, 10], [0, 0, 20, 10], [20, 20, 30, 30]]], np.float32)
HALF = np.full((1, 4, 2), 0.5, np.float32)  # class probabilities, 2 classes


def assign(gt_boxes, gt_classes, pred=PRED, probs=HALF, topk=2):
    return task_aligned_assign(probs, pred, POINTS, np.array(gt_boxes, np.float32),
                               np.array(gt_classes, np.int32), topk=topk, alpha=0.5, beta=6.0)


def test_points_inside_boxes():
    inside = points_inside_boxes(tf.constant(POINTS), tf.constant([[GT_BOX]])).numpy()
    np.testing.assert_array_equal(inside, [[[True, True, True, False]]])


def test_topk_best_aligned_points_inside_the_box_become_positives():
    targets = assign([[GT_BOX]], [[1]])
    # Alignments 0.5**0.5 * IoU**6: point 0 (IoU 1) and point 2 (IoU 0.5) beat point 1 (0.25).
    np.testing.assert_array_equal(targets.foreground, [[True, False, True, False]])
    np.testing.assert_array_equal(targets.gt_index, [[0, -1, 0, -1]])
    # Target score = alignment / best alignment * best IoU = (IoU / 1) ** 6 * 1.
    expected = np.zeros((1, 4, 2), np.float32)
    expected[0, 0, 1] = 1.0
    expected[0, 2, 1] = 0.5 ** 6
    np.testing.assert_allclose(targets.scores, expected, rtol=1e-5)
    np.testing.assert_allclose(targets.boxes[0, 0], GT_BOX)
    np.testing.assert_allclose(targets.boxes[0, 1], [0, 0, 0, 0])


def test_padding_rows_are_never_assigned():
    whole_image = [-10.0, -10.0, 40.0, 40.0]
    with_padding = assign([[GT_BOX, whole_image]], [[1, -1]])
    alone = assign([[GT_BOX]], [[1]])
    np.testing.assert_array_equal(with_padding.foreground, alone.foreground)
    np.testing.assert_allclose(with_padding.scores, alone.scores)


def test_padding_rows_between_and_after_objects_change_nothing_and_indices_stay_the_callers():
    """The assigner drops padding rows before its [B, G, A] work: rows anywhere in the batch,
    images with fewer objects than others, and `gt_index` naming the caller's own rows."""
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 64, size=(40, 2)).astype(np.float32)
    corners = rng.uniform(0, 40, size=(2, 40, 2)).astype(np.float32)
    pred = np.concatenate([corners, corners + 20], axis=-1)
    probs = rng.uniform(0.1, 0.9, size=(2, 40, 3)).astype(np.float32)
    boxes = np.array([[[2, 2, 30, 30], [20, 20, 60, 50], [5, 30, 40, 62]],
                      [[10, 0, 50, 35], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[0, 2, 1], [1, -1, -1]], np.int32)
    compact = task_aligned_assign(probs, pred, points, boxes, classes, topk=3)
    # The same objects with padding rows in between and a long padded tail (as the pipeline pads).
    rows = [0, 4, 6]  # where the objects go among 12 rows
    spread_boxes, spread_classes = np.zeros((2, 12, 4), np.float32), np.full((2, 12), -1, np.int32)
    spread_boxes[:, rows], spread_classes[:, rows] = boxes, classes
    spread = task_aligned_assign(probs, pred, points, spread_boxes, spread_classes, topk=3)
    assert np.any(compact.foreground[0]) and np.any(compact.foreground[1])
    np.testing.assert_array_equal(spread.foreground, compact.foreground)
    np.testing.assert_allclose(spread.scores, compact.scores, rtol=1e-6)
    np.testing.assert_allclose(spread.boxes, compact.boxes)
    expected_index = np.where(compact.gt_index.numpy() >= 0, np.array(rows)[np.maximum(compact.gt_index, 0)], -1)
    np.testing.assert_array_equal(spread.gt_index, expected_index)


def test_a_point_claimed_by_two_boxes_keeps_the_one_it_overlaps_most():
    points = np.array([[10, 10]], np.float32)
    pred = np.array([[[5, 5, 28, 28]]], np.float32)
    gt = np.array([[GT_BOX, [5.0, 5.0, 30.0, 30.0]]], np.float32)
    targets = task_aligned_assign(np.full((1, 1, 3), 0.5, np.float32), pred, points, gt,
                                  np.array([[0, 2]], np.int32), topk=1)
    np.testing.assert_array_equal(targets.gt_index, [[1]])
    assert targets.scores[0, 0, 2] > 0 and targets.scores[0, 0, 0] == 0


def test_no_objects_means_no_positives():
    targets = assign(np.full((1, 3, 4), -1, np.float32), [[-1, -1, -1]])
    assert not np.any(targets.foreground) and np.all(targets.scores.numpy() == 0)
    empty = assign(np.zeros((1, 0, 4), np.float32), np.zeros((1, 0), np.int32))
    assert not np.any(empty.foreground)


def test_dfl_expectation_and_its_minimum():
    reg_max = 6
    peaked = np.full((1, 1, 4, reg_max), -30.0, np.float32)
    peaked[..., 3] = 30.0
    np.testing.assert_allclose(dfl_distances(peaked.reshape(1, 1, -1), reg_max), [[[3, 3, 3, 3]]], atol=1e-4)
    # The distribution 0.75 at bin 2, 0.25 at bin 3 has mean 2.25, and its DFL towards
    # 2.25 is its own entropy (the loss's minimum).
    probabilities = np.full(reg_max, 1e-12)
    probabilities[2], probabilities[3] = 0.75, 0.25
    logits = np.tile(np.log(probabilities), (1, 1, 4)).astype(np.float32)
    target = np.full((1, 1, 4), 2.25, np.float32)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(distribution_focal_loss(logits, target, reg_max), [[entropy]], rtol=1e-4)
    other = np.tile(np.log(np.roll(probabilities, 1)), (1, 1, 4)).astype(np.float32)
    assert float(distribution_focal_loss(other, target, reg_max)[0, 0]) > entropy + 1.0


def test_an_image_without_objects_has_zero_box_losses_and_a_finite_class_loss():
    reg_max = 4
    raw = {"box_distribution": tf.random.normal([1, 4, 4 * reg_max], seed=0),
           "class_logits": tf.random.normal([1, 4, 2], seed=1)}
    points, strides = tf.constant(POINTS), tf.fill([4], 8.0)
    targets = assign(np.full((1, 2, 4), -1, np.float32), [[-1, -1]])
    losses = yolo_losses(raw, PRED, targets, points, strides, reg_max)
    assert float(losses["box"]) == 0.0 and float(losses["dfl"]) == 0.0
    assert np.isfinite(float(losses["class"])) and float(losses["class"]) > 0


def test_a_perfect_box_has_zero_box_loss():
    reg_max = 16
    targets = assign([[GT_BOX]], [[1]])
    points, strides = tf.constant(POINTS), tf.fill([4], 4.0)
    perfect = tf.where(targets.foreground[..., tf.newaxis], targets.boxes, PRED)
    raw = {"box_distribution": tf.zeros([1, 4, 4 * reg_max]), "class_logits": tf.zeros([1, 4, 2])}
    losses = yolo_losses(raw, perfect, targets, points, strides, reg_max)
    assert abs(float(losses["box"])) < 1e-6
    assert float(yolo_losses(raw, PRED[:, ::-1], targets, points, strides, reg_max)["box"]) > 0.1
