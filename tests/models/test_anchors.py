"""Anchor points and anchor boxes: hand-computed layouts, order, counts, errors."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.models.ops.anchors import (AnchorError, AnchorGenerator, grid_points, level_shapes,
                                       linear_anchor_sizes)


def test_grid_points_are_cell_centres_level_by_level_row_major():
    points, strides = grid_points((16, 32), strides=(8, 16))
    level8 = [(4, 4), (12, 4), (20, 4), (28, 4), (4, 12), (12, 12), (20, 12), (28, 12)]
    level16 = [(8, 8), (24, 8)]
    np.testing.assert_array_equal(points, np.array(level8 + level16, np.float32))
    np.testing.assert_array_equal(strides, [8] * 8 + [16] * 2)
    assert points.dtype == np.float32 and strides.dtype == np.float32


def test_grid_points_offset_zero_puts_points_on_cell_corners():
    points, _ = grid_points((8, 16), strides=(8,), offset=0.0)
    np.testing.assert_array_equal(points, [[0, 0], [8, 0]])


def test_level_shapes_round_up_like_same_padded_convolutions():
    assert level_shapes((100, 60), (8, 32)) == [(13, 8), (4, 2)]


def test_anchor_boxes_golden_values_and_order():
    generator = AnchorGenerator(strides=(16,), sizes=(8.0,), scales=(1.0,), aspect_ratios=(1.0, 4.0))
    boxes = generator((16, 32))
    # Cell centres (8, 8) and (24, 8); ratio 4 = width / height: 16 x 4 (same area 64).
    expected = [[4, 4, 12, 12], [0, 6, 16, 10], [20, 4, 28, 12], [16, 6, 32, 10]]
    np.testing.assert_allclose(boxes, expected)
    assert generator.anchors_per_location == 2


def test_scales_come_before_ratios_within_a_cell():
    generator = AnchorGenerator(strides=(32,), sizes=(10.0,), scales=(1.0, 2.0), aspect_ratios=(1.0, 0.25))
    widths_heights = generator.cell_shapes(10.0)
    np.testing.assert_allclose(widths_heights, [[10, 10], [5, 20], [20, 20], [10, 40]])


def test_anchor_count_matches_the_levels_and_cells():
    generator = AnchorGenerator(strides=(8, 16, 32), sizes=(16, 32, 64), scales=(1.0, 1.5),
                                aspect_ratios=(1.0, 2.0, 0.5))
    boxes = generator((64, 96))
    cells = 8 * 12 + 4 * 6 + 2 * 3
    assert boxes.shape == (cells * 6, 4)
    assert generator.num_anchors((64, 96)) == len(boxes)
    # Every box is centred on a cell centre of its level.
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    points, _ = grid_points((64, 96), (8, 16, 32))
    np.testing.assert_allclose(centres[::6], points)


def test_generator_config_round_trip():
    generator = AnchorGenerator(strides=(8, 16), sizes=(20.0, 40.0), scales=(1.0, 1.41), aspect_ratios=(0.5, 2.0))
    assert AnchorGenerator.from_config(generator.get_config()) == generator


@pytest.mark.parametrize("kwargs", [
    {"strides": (8, 16), "sizes": (32.0,)},
    {"strides": (8,), "sizes": (0.0,)},
    {"strides": (0,), "sizes": (8.0,)},
    {"strides": (8,), "sizes": (8.0,), "aspect_ratios": ()},
])
def test_bad_generator_parameters_are_named(kwargs):
    with pytest.raises(AnchorError):
        AnchorGenerator(**kwargs)


def test_bad_image_size_is_an_anchor_error():
    with pytest.raises(AnchorError, match="image_size"):
        grid_points((0, 32))
    with pytest.raises(AnchorError, match="image_size"):
        AnchorGenerator()("big")


def test_linear_anchor_sizes_follow_ssd_scales():
    np.testing.assert_allclose(linear_anchor_sizes(100, 3, 0.2, 0.8), [20.0, 50.0, 80.0])
    assert linear_anchor_sizes(100, 1, 0.3, 0.9) == (30.0,)
    with pytest.raises(AnchorError):
        linear_anchor_sizes(100, 2, 0.5, 0.2)
