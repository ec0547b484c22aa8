"""RPN: head widths and anchor order, target sampling counts, proposal generation."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from detseg.models.ops.anchors import AnchorGenerator
from detseg.models.ops.box_coding import decode_center_size
from detseg.models.rcnn.rpn_head import RPNHead
from detseg.models.rcnn.rpn_proposals import ProposalConfig, generate_proposals
from detseg.models.rcnn.rpn_targets import RPN_IGNORE, RPN_NEGATIVE, RPN_POSITIVE, RPN_VARIANCES, rpn_targets

IMAGE = (64, 64)
GENERATOR = AnchorGenerator(strides=(8, 16), sizes=(16.0, 32.0), scales=(1.0,), aspect_ratios=(0.5, 1.0, 2.0))


def test_head_outputs_one_row_per_anchor_in_anchor_order():
    head = RPNHead(("P3", "P4"), GENERATOR.anchors_per_location, channels=8)
    features = {"P3": tf.random.normal([2, 8, 8, 16]), "P4": tf.random.normal([2, 4, 4, 16])}
    out = head(features)
    count = GENERATOR.num_anchors(IMAGE)
    assert count == (64 + 16) * 3
    assert out["objectness"].shape == (2, count) and out["deltas"].shape == (2, count, 4)
    # Row 3 * (8 * 1 + 2) + 1 is P3 cell (row 1, col 2), anchor 1: the head's per-level
    # conv output at that cell and channel.
    hidden = head.conv(features["P3"])
    direct = head.objectness(hidden)[0, 1, 2, 1]
    np.testing.assert_allclose(out["objectness"][0, 3 * 10 + 1].numpy(), direct.numpy(), rtol=1e-5)
    assert head.get_config()["anchors_per_cell"] == 3


def _targets(gt_boxes, gt_classes, samples=64, fraction=0.5):
    anchors = GENERATOR(IMAGE)
    gt_boxes = tf.constant(gt_boxes, tf.float32)
    valid = tf.constant(gt_classes) >= 0
    return anchors, rpn_targets(anchors, gt_boxes, valid, samples, fraction, seed=keras.random.SeedGenerator(0))


def test_target_sampling_counts_and_codes():
    gt_boxes = [[[8, 8, 40, 40], [30, 20, 62, 60]], [[-1, -1, -1, -1], [-1, -1, -1, -1]]]
    anchors, targets = _targets(gt_boxes, [[0, 1], [-1, -1]], samples=64, fraction=0.25)
    labels = targets["objectness"].numpy()
    assert set(np.unique(labels)) <= {RPN_POSITIVE, RPN_NEGATIVE, RPN_IGNORE}
    positives = (labels == RPN_POSITIVE).sum(axis=1)
    sampled = (labels != RPN_IGNORE).sum(axis=1)
    assert 1 <= positives[0] <= 16 and sampled[0] == 64  # at most a quarter of the 64 positive
    # The empty image: all 64 sampled anchors are background; no box target anywhere.
    assert positives[1] == 0 and sampled[1] == 64
    np.testing.assert_array_equal(targets["box_targets"].numpy()[1], 0.0)


def test_every_object_gets_its_best_anchor_and_targets_decode_to_it():
    # A 12x30 box overlaps no anchor at IoU 0.7; it still gets its best anchor as positive.
    gt = [[[20, 10, 32, 40]]]
    anchors, targets = _targets(gt, [[2]], samples=256, fraction=0.5)
    labels = targets["objectness"].numpy()[0]
    positive = np.flatnonzero(labels == RPN_POSITIVE)
    assert len(positive) >= 1
    decoded = decode_center_size(targets["box_targets"][0].numpy()[positive], anchors[positive], RPN_VARIANCES)
    np.testing.assert_allclose(decoded.numpy(), np.repeat(gt[0], len(positive), axis=0), atol=1e-3)


def test_proposals_are_clipped_sorted_and_limited():
    anchors = GENERATOR(IMAGE)
    count = len(anchors)
    level_sizes = [64 * 3, 16 * 3]
    objectness = tf.random.normal([2, count], seed=1)
    deltas = tf.random.normal([2, count, 4], stddev=0.5, seed=2)
    config = ProposalConfig(pre_nms_top_k=50, post_nms_top_k=30, nms_iou=0.7, min_size=1.0)
    out = generate_proposals(objectness, deltas, anchors, level_sizes, IMAGE, config)
    boxes, scores = out["boxes"].numpy(), out["scores"].numpy()
    assert boxes.shape == (2, 30, 4) and scores.shape == (2, 30)
    assert boxes.min() >= 0.0 and boxes[..., 2].max() <= 64.0 and boxes[..., 3].max() <= 64.0
    for image in range(2):
        real = int(out["num_proposals"][image])
        assert 0 < real <= 30
        assert np.all(np.diff(scores[image, :real]) <= 1e-6)  # best first
        np.testing.assert_array_equal(boxes[image, real:], 0.0)  # padding rows are empty boxes


def test_overlapping_proposals_of_one_level_are_suppressed():
    # Two anchors of one level decoded to the same box: NMS keeps one of them.
    anchors = np.array([[0, 0, 16, 16], [0, 0, 16, 16], [32, 32, 48, 48]], np.float32)
    objectness = tf.constant([[3.0, 2.0, 1.0]])
    deltas = tf.zeros([1, 3, 4])
    config = ProposalConfig(pre_nms_top_k=3, post_nms_top_k=3, nms_iou=0.5, min_size=1.0)
    out = generate_proposals(objectness, deltas, anchors, [3], IMAGE, config)
    assert int(out["num_proposals"][0]) == 2
    np.testing.assert_allclose(out["boxes"].numpy()[0, :2], [[0, 0, 16, 16], [32, 32, 48, 48]])
