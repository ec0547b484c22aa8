"""Box coding: golden deltas and distances, encode/decode round trips, clamping, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.ops.box_coding import (MAX_LOG_SCALE, BoxCodingError, decode_center_size, decode_ltrb,
                                          encode_center_size, encode_ltrb)


def random_boxes(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 200, (count, 2))
    size = rng.uniform(2, 120, (count, 2))
    return np.concatenate([corner, corner + size], axis=-1).astype(np.float32)


def test_center_size_golden_values():
    anchor = [[0.0, 0.0, 10.0, 10.0]]       # centre (5, 5), 10 x 10
    box = [[2.0, 4.0, 22.0, 14.0]]          # centre (12, 9), 20 x 10
    deltas = encode_center_size(box, anchor, (0.1, 0.1, 0.2, 0.2)).numpy()
    np.testing.assert_allclose(deltas, [[7.0, 4.0, math.log(2.0) / 0.2, 0.0]], rtol=1e-6)
    unit = encode_center_size(box, anchor, (1.0, 1.0, 1.0, 1.0)).numpy()
    np.testing.assert_allclose(unit, [[0.7, 0.4, math.log(2.0), 0.0]], rtol=1e-6)


def test_center_size_round_trip_with_broadcast_anchors():
    boxes = random_boxes(12, 0).reshape(2, 6, 4)
    anchors = random_boxes(6, 1)
    deltas = encode_center_size(boxes, anchors)
    assert deltas.shape == (2, 6, 4)
    np.testing.assert_allclose(decode_center_size(deltas, anchors).numpy(), boxes, atol=1e-3)


def test_decode_clamps_the_log_scale():
    anchor = [[0.0, 0.0, 16.0, 16.0]]
    huge = decode_center_size([[0.0, 0.0, 1e4, 1e4]], anchor, (1.0, 1.0, 1.0, 1.0)).numpy()
    assert np.all(np.isfinite(huge))
    side = 16.0 * math.exp(MAX_LOG_SCALE)
    np.testing.assert_allclose(huge, [[8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2]], rtol=1e-5)


def test_zero_size_boxes_encode_finite():
    deltas = encode_center_size([[-1.0, -1.0, -1.0, -1.0]], [[0.0, 0.0, 8.0, 8.0]]).numpy()
    assert np.all(np.isfinite(deltas))


def test_ltrb_golden_values():
    distances = encode_ltrb([[4.0, 10.0, 30.0, 26.0]], [[10.0, 20.0]], [2.0]).numpy()
    np.testing.assert_allclose(distances, [[3.0, 5.0, 10.0, 3.0]])
    np.testing.assert_allclose(decode_ltrb(distances, [[10.0, 20.0]], [2.0]).numpy(), [[4, 10, 30, 26]])


def test_ltrb_round_trip_over_a_batch():
    boxes = random_boxes(10, 2).reshape(2, 5, 4)
    points = (boxes[0, :, :2] + boxes[0, :, 2:]) / 2  # [5, 2], shared by both images
    strides = np.array([8, 8, 16, 16, 32], np.float32)
    distances = encode_ltrb(boxes, points, strides)
    np.testing.assert_allclose(decode_ltrb(distances, points, strides).numpy(), boxes, atol=1e-3)


def test_points_outside_a_box_give_negative_distances():
    distances = encode_ltrb([[10.0, 10.0, 20.0, 20.0]], [[5.0, 15.0]], [1.0]).numpy()
    assert distances[0, 0] < 0 and np.all(distances[0, 1:] > 0)


def test_coding_works_in_graph_mode():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4], tf.float32)])
    def round_trip(boxes):
        anchors = tf.constant([[0.0, 0.0, 32.0, 32.0]])
        return decode_center_size(encode_center_size(boxes, anchors), anchors)

    boxes = random_boxes(3, 3)[np.newaxis]
    np.testing.assert_allclose(round_trip(boxes).numpy(), boxes, atol=1e-3)


@pytest.mark.parametrize("variances", [(0.1, 0.1, 0.0, 0.2), (0.1, 0.1, 0.2)])
def test_bad_variances_are_refused(variances):
    with pytest.raises(BoxCodingError, match="variances"):
        encode_center_size([[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]], variances)
