"""RoIAlign: hand-computed bilinear values, multi-channel features, FPN level assignment."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.ops.roi_align import assign_pyramid_levels, crop_and_resize_aligned, level_number, roi_align


def _ramp(height: int = 4, width: int = 4) -> np.ndarray:
    """`[1, h, w, 2]`: channel 0 is `10 * row + col` at each cell centre, channel 1 is `100 - that`."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    values = 10.0 * rows + cols
    return np.stack([values, 100.0 - values], axis=-1)[np.newaxis]


def test_one_bin_of_a_linear_map_is_its_value_at_the_box_centre():
    # Stride 1: cell (i, j) is centred on pixel (j + 0.5, i + 0.5). Box x 1..3, y 0..2 has
    # its centre at (2, 1) = feature coordinate (col 1.5, row 0.5): 10 * 0.5 + 1.5 = 6.5.
    # Bilinear sampling of a linear map is exact, and averaging the 2x2 samples keeps it.
    pooled = roi_align({"P0": tf.constant(_ramp())}, tf.constant([[[1.0, 0.0, 3.0, 2.0]]]), 1, {"P0": 1})
    np.testing.assert_allclose(pooled.numpy().reshape(-1), [6.5, 93.5], atol=1e-5)


def test_two_by_two_bins_including_a_clamped_border_sample():
    # Box x 1..3, y 0..2 into 2x2 bins, 2x2 samples each. Bin (0, 0): sample x 1.25, 1.75 ->
    # cols 0.75, 1.25; y 0.25, 0.75 -> rows -0.25 (outside by a quarter cell: reads row 0)
    # and 0.25. Values 10 * row + col: rows (0, 0.25) average 1.25 -> 10 * 0.125 + 1 = 2.25.
    # Bin (1, 1): cols 1.75, 2.25; rows 0.75, 1.25 -> 10 * 1 + 2 = 12.
    pooled = roi_align({"P0": tf.constant(_ramp())}, tf.constant([[[1.0, 0.0, 3.0, 2.0]]]), 2, {"P0": 1})
    channel0 = pooled.numpy()[0, 0, :, :, 0]
    np.testing.assert_allclose(channel0, [[2.25, 3.25], [11.0, 12.0]], atol=1e-5)
    np.testing.assert_allclose(pooled.numpy()[0, 0, :, :, 1], 100.0 - channel0, atol=1e-5)


def test_stride_scales_the_box_into_feature_coordinates():
    # Stride 8: pixel box 8..24 x 0..16 is feature box 1..3 x 0..2 at stride 1.
    features = tf.constant(_ramp())
    at_stride_8 = roi_align({"P3": features}, tf.constant([[[8.0, 0.0, 24.0, 16.0]]]), 2)
    at_stride_1 = roi_align({"P0": features}, tf.constant([[[1.0, 0.0, 3.0, 2.0]]]), 2, {"P0": 1})
    np.testing.assert_allclose(at_stride_8.numpy(), at_stride_1.numpy(), atol=1e-5)


def test_a_nonlinear_value_matches_hand_bilinear_interpolation():
    # Feature: only cell (1, 1) is 1. A 1x1 output with sampling ratio 1 samples the box centre.
    feature = np.zeros((1, 3, 3, 1), np.float32)
    feature[0, 1, 1, 0] = 1.0
    # Centre at pixel (1.75, 1.25) -> col 1.25, row 0.75 -> weight (1 - 0.25) * (1 - 0.25) = 0.5625.
    box = tf.constant([[[1.25, 0.75, 2.25, 1.75]]])
    pooled = roi_align({"P0": tf.constant(feature)}, box, 1, {"P0": 1}, sampling_ratio=1)
    assert pooled.numpy().item() == pytest.approx(0.5625, abs=1e-6)


def test_batch_index_picks_each_images_own_features():
    features = np.concatenate([_ramp(), _ramp() + 1000.0], axis=0)  # image 1 = image 0 + 1000
    boxes = tf.constant([[[1.0, 0.0, 3.0, 2.0]], [[1.0, 0.0, 3.0, 2.0]]])
    pooled = roi_align({"P0": tf.constant(features)}, boxes, 1, {"P0": 1}).numpy()
    assert pooled.shape == (2, 1, 1, 1, 2)
    np.testing.assert_allclose(pooled[1, 0, 0, 0, 0] - pooled[0, 0, 0, 0, 0], 1000.0, atol=1e-3)


def test_level_assignment_follows_the_fpn_rule():
    boxes = tf.constant([[0, 0, 10, 10], [0, 0, 111, 111], [0, 0, 112, 112], [0, 0, 224, 224],
                         [0, 0, 448, 448], [0, 0, 2000, 2000], [5, 5, 5, 5]], tf.float32)
    index = assign_pyramid_levels(boxes, (3, 4, 5), canonical_size=224.0, canonical_level=4)
    # sqrt(area) < 224 -> level 3 (clipped from below), [224, 448) -> 4, >= 448 -> 5 (clipped).
    assert index.numpy().tolist() == [0, 0, 0, 1, 2, 2, 0]
    assert level_number("P5") == 5
    with pytest.raises(ValueError, match="P3"):
        level_number("C5")


def test_multilevel_pooling_reads_the_assigned_level():
    small, large = np.full((1, 8, 8, 3), 1.0, np.float32), np.full((1, 4, 4, 3), 2.0, np.float32)
    features = {"P3": tf.constant(small), "P4": tf.constant(large)}
    boxes = tf.constant([[[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 60.0, 60.0], [4.0, 4.0, 30.0, 40.0]]])
    pooled = roi_align(features, boxes, 3, canonical_size=32.0, canonical_level=4).numpy()
    assert pooled.shape == (1, 3, 3, 3, 3)
    # 20 px -> level floor(4 + log2(20/32)) = 3; 60 px -> 4; sqrt(26 * 36) ~ 30.6 -> 3.
    np.testing.assert_allclose(pooled[0, :, 1, 1, 0], [1.0, 2.0, 1.0])


def test_gradients_flow_to_the_features():
    features = tf.Variable(_ramp())
    with tf.GradientTape() as tape:
        pooled = roi_align({"P0": features}, tf.constant([[[1.0, 0.0, 3.0, 2.0]]]), 2, {"P0": 1})
        total = tf.reduce_sum(pooled)
    gradient = tape.gradient(total, features)
    assert gradient is not None and float(tf.reduce_sum(gradient)) == pytest.approx(8.0, rel=1e-5)


def test_crop_and_resize_aligned_samples_the_box_interior():
    # A 4x4 mask with the 2x2 block at rows 1-2, cols 1-2 set; cropping exactly that box
    # at stride 1 to 2x2 samples the four pixel centres of the block.
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, 1:3, 1:3, 0] = 1.0
    crop = crop_and_resize_aligned(tf.constant(mask), tf.constant([[1.0, 1.0, 3.0, 3.0]]),
                                   tf.constant([0]), 1.0, 2)
    np.testing.assert_allclose(crop.numpy()[0, :, :, 0], np.ones((2, 2)), atol=1e-6)
