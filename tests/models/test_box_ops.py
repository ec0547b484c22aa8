"""Box geometry against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.ops.box_ops import (
    BOX_FORMATS, box_area, clip_boxes, convert_boxes, cxcywh_to_xyxy, elementwise_giou,
    elementwise_iou, giou_loss, pairwise_giou, pairwise_iou, xywh_to_xyxy, xyxy_to_cxcywh,
    xyxy_to_xywh, xyxy_to_yxyx, yxyx_to_xyxy)

BOX_XYXY = [10.0, 20.0, 50.0, 80.0]
# The same box by hand: width 40, height 60, centre (30, 50).
BOX_IN = {"xyxy": BOX_XYXY, "xywh": [10.0, 20.0, 40.0, 60.0],
          "cxcywh": [30.0, 50.0, 40.0, 60.0], "yxyx": [20.0, 10.0, 80.0, 50.0]}

# Two sets for the pairwise matrices below.
SET_A = [[0, 0, 10, 10], [5, 5, 15, 15]]
SET_B = [[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]]


def test_named_conversions_give_the_hand_computed_box():
    np.testing.assert_allclose(xyxy_to_xywh(BOX_XYXY), BOX_IN["xywh"])
    np.testing.assert_allclose(xyxy_to_cxcywh(BOX_XYXY), BOX_IN["cxcywh"])
    np.testing.assert_allclose(xyxy_to_yxyx(BOX_XYXY), BOX_IN["yxyx"])
    np.testing.assert_allclose(xywh_to_xyxy(BOX_IN["xywh"]), BOX_XYXY)
    np.testing.assert_allclose(cxcywh_to_xyxy(BOX_IN["cxcywh"]), BOX_XYXY)
    np.testing.assert_allclose(yxyx_to_xyxy(BOX_IN["yxyx"]), BOX_XYXY)


@pytest.mark.parametrize("source", BOX_FORMATS)
@pytest.mark.parametrize("target", BOX_FORMATS)
def test_convert_boxes_between_every_pair_of_formats(source, target):
    np.testing.assert_allclose(convert_boxes(BOX_IN[source], source, target), BOX_IN[target])


def test_conversions_keep_leading_shape_and_handle_empty_inputs():
    batch = tf.random.uniform([2, 3, 4], 0, 100)
    assert convert_boxes(batch, "xyxy", "cxcywh").shape == (2, 3, 4)
    np.testing.assert_allclose(convert_boxes(convert_boxes(batch, "xyxy", "xywh"), "xywh", "xyxy"),
                               batch, atol=1e-4)
    assert convert_boxes(tf.zeros([0, 4]), "xyxy", "yxyx").shape == (0, 4)


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="'xxyy'"):
        convert_boxes(BOX_XYXY, "xxyy", "xyxy")


def test_area_is_zero_for_inverted_boxes():
    np.testing.assert_allclose(box_area([[0, 0, 10, 10], [5, 5, 0, 0], [0, 0, 4, 2.5]]), [100, 0, 10])


def test_pairwise_iou_matrix():
    # A0 = B0 exactly; A0 and B1 touch at one corner; B2 is a quarter of A0.
    # A1 overlaps A0/B0 and B1 by 5x5 = 25, union 100 + 100 - 25 = 175.
    expected = [[1.0, 0.0, 0.25],
                [25 / 175, 25 / 175, 0.0]]
    np.testing.assert_allclose(pairwise_iou(SET_A, SET_B), expected, rtol=1e-6)


def test_pairwise_giou_matrix():
    # A0-B1: IoU 0, union 200, enclosing 20x20 = 400 -> 0 - 200/400.
    # A1-B0: enclosing 15x15 = 225 -> 25/175 - (225 - 175)/225.
    # A1-B1: enclosing 15x15 = 225 (x, y from 5 to 20) -> same as A1-B0.
    # A1-B2: IoU 0, union 125, enclosing 15x15 = 225 -> -(225 - 125)/225.
    # A0-B2: B2 inside A0, enclosing = A0 -> 0.25.
    expected = [[1.0, -0.5, 0.25],
                [25 / 175 - 50 / 225, 25 / 175 - 50 / 225, -100 / 225]]
    np.testing.assert_allclose(pairwise_giou(SET_A, SET_B), expected, rtol=1e-6)


def test_elementwise_matches_the_diagonal_and_loss_is_one_minus_giou():
    boxes1 = tf.constant([[0, 0, 10, 10], [5, 5, 15, 15]], tf.float32)
    boxes2 = tf.constant([[0, 0, 5, 5], [10, 10, 20, 20]], tf.float32)
    np.testing.assert_allclose(elementwise_iou(boxes1, boxes2), [0.25, 25 / 175], rtol=1e-6)
    np.testing.assert_allclose(giou_loss(boxes1, boxes2),
                               [1 - 0.25, 1 - (25 / 175 - 50 / 225)], rtol=1e-6)
    np.testing.assert_allclose(elementwise_giou(boxes1, boxes1), [1.0, 1.0])


def test_pairwise_with_batch_dimension_and_empty_sets():
    batch_a = tf.constant([SET_A, SET_A], tf.float32)
    batch_b = tf.constant([SET_B, SET_B], tf.float32)
    ious = pairwise_iou(batch_a, batch_b)
    assert ious.shape == (2, 2, 3)
    np.testing.assert_allclose(ious[1], pairwise_iou(SET_A, SET_B))
    assert pairwise_iou(tf.zeros([0, 4]), SET_B).shape == (0, 3)
    assert pairwise_giou(SET_A, tf.zeros([0, 4])).shape == (2, 0)


def test_degenerate_boxes_give_zero_not_nan():
    point = [[3.0, 3.0, 3.0, 3.0]]
    np.testing.assert_array_equal(elementwise_iou(point, point), [0.0])
    np.testing.assert_array_equal(elementwise_giou(point, point), [0.0])


def test_integer_boxes_are_accepted():
    np.testing.assert_allclose(pairwise_iou(tf.constant([[0, 0, 10, 10]]), tf.constant([[0, 0, 5, 5]])),
                               [[0.25]])


def test_clip_to_image_size_height_then_width():
    boxes = [[-5.0, 3.0, 70.0, 90.0], [10.0, -1.0, 20.0, 30.0]]
    np.testing.assert_allclose(clip_boxes(boxes, (60, 50)), [[0, 3, 50, 60], [10, 0, 20, 30]])


def test_clip_with_per_image_sizes():
    boxes = tf.constant([[[-5.0, 3.0, 70.0, 90.0]], [[-5.0, 3.0, 70.0, 90.0]]])  # [B=2, N=1, 4]
    sizes = tf.constant([[60, 50], [20, 100]])  # [B, 2] (height, width)
    clipped = clip_boxes(boxes, sizes[:, tf.newaxis, :])
    np.testing.assert_allclose(clipped, [[[0, 3, 50, 60]], [[0, 3, 70, 20]]])
