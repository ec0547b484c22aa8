"""IoU matching on hand-written IoU matrices: thresholds, forced matches, padding, empty."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.ops.matching import (MATCH_IGNORE, MATCH_NEGATIVE, IouMatcher, MatchingError, gather_matched,
                                        negative_mask, positive_mask, valid_ground_truth)

# Two ground-truth boxes (rows) x four anchors (columns).
IOU = np.array([[0.70, 0.45, 0.10, 0.00],
                [0.20, 0.55, 0.30, 0.00]], np.float32)
BOTH_VALID = np.array([True, True])


def test_thresholds_split_positive_ignore_negative():
    matches = IouMatcher(0.5, 0.4, force_best_anchor=False)(IOU, BOTH_VALID).numpy()
    np.testing.assert_array_equal(matches, [0, 1, MATCH_NEGATIVE, MATCH_NEGATIVE])
    matches = IouMatcher(0.5, 0.25, force_best_anchor=False)(IOU, BOTH_VALID).numpy()
    np.testing.assert_array_equal(matches, [0, 1, MATCH_IGNORE, MATCH_NEGATIVE])


def test_forced_best_anchor_gives_every_box_a_positive():
    iou = np.array([[0.30, 0.10, 0.00],
                    [0.20, 0.35, 0.05]], np.float32)
    plain = IouMatcher(0.5, 0.5, force_best_anchor=False)(iou, BOTH_VALID).numpy()
    np.testing.assert_array_equal(plain, [MATCH_NEGATIVE] * 3)
    forced = IouMatcher(0.5, 0.5, force_best_anchor=True)(iou, BOTH_VALID).numpy()
    np.testing.assert_array_equal(forced, [0, 1, MATCH_NEGATIVE])


def test_two_boxes_forcing_one_anchor_keep_the_higher_iou():
    iou = np.array([[0.30, 0.10],
                    [0.40, 0.20]], np.float32)
    forced = IouMatcher(0.5, 0.5)(iou, BOTH_VALID).numpy()
    np.testing.assert_array_equal(forced, [1, MATCH_NEGATIVE])


def test_padding_rows_never_match():
    matches = IouMatcher(0.5, 0.4)(IOU, np.array([True, False])).numpy()
    # Anchor 1 overlaps the padding row most (0.55); only box 0 counts: 0.45 -> ignored.
    np.testing.assert_array_equal(matches, [0, MATCH_IGNORE, MATCH_NEGATIVE, MATCH_NEGATIVE])


def test_no_ground_truth_makes_every_anchor_negative():
    batch_iou = np.zeros((2, 0, 5), np.float32)
    matches = IouMatcher(0.5, 0.4)(batch_iou, np.zeros((2, 0), bool)).numpy()
    np.testing.assert_array_equal(matches, np.full((2, 5), MATCH_NEGATIVE))
    all_padding = IouMatcher(0.5, 0.4)(IOU[np.newaxis], np.array([[False, False]])).numpy()
    np.testing.assert_array_equal(all_padding, [[MATCH_NEGATIVE] * 4])


def test_batched_matching_in_graph_mode():
    matcher = IouMatcher(0.5, 0.4)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None], tf.bool)])
    def match(iou, valid):
        return matcher(iou, valid)

    batch = np.stack([IOU, IOU[::-1]])
    matches = match(batch, np.ones((2, 2), bool)).numpy()
    np.testing.assert_array_equal(matches[0], [0, 1, MATCH_NEGATIVE, MATCH_NEGATIVE])
    np.testing.assert_array_equal(matches[1], [1, 0, MATCH_NEGATIVE, MATCH_NEGATIVE])


def test_masks_and_gather():
    matches = tf.constant([[1, MATCH_NEGATIVE, MATCH_IGNORE, 0]])
    np.testing.assert_array_equal(positive_mask(matches), [[True, False, False, True]])
    np.testing.assert_array_equal(negative_mask(matches), [[False, True, False, False]])
    values = tf.constant([[[1.0, 1.0], [2.0, 2.0]]])
    np.testing.assert_array_equal(gather_matched(values, matches), [[[2, 2], [1, 1], [1, 1], [1, 1]]])
    empty = gather_matched(tf.zeros([1, 0, 4]), tf.constant([[MATCH_NEGATIVE, MATCH_NEGATIVE]]))
    assert empty.shape == (1, 2, 4)


def test_valid_ground_truth_reads_the_padding_class():
    np.testing.assert_array_equal(valid_ground_truth([[0, 2, -1]]), [[True, True, False]])


def test_thresholds_out_of_order_are_refused():
    with pytest.raises(MatchingError, match="negative_threshold"):
        IouMatcher(0.3, 0.5)
