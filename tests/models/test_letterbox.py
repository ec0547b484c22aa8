"""models.ops.letterbox: the one letterbox transform and its inverse, by hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import PAD_BOX_VALUE, PAD_PIXEL_VALUE
from detseg.models.ops.letterbox import (boxes_to_frame, boxes_to_original, dense_to_original, letterbox_image,
                                         letterbox_images, letterbox_lengths, letterbox_masks, letterbox_transform,
                                         masks_to_original, nearest_source_index, transform_from_vector,
                                         transform_to_vector, vector_frame_size)

S = 64


def _values(transform: dict) -> dict:
    return {key: np.asarray(value).tolist() for key, value in transform.items()}


@pytest.mark.parametrize("height, width, size, expected", [
    # scale = 64/100; short side 60*0.64 = 38.4 -> 38 rows; (64 - 38) // 2 = 13 rows above
    (60, 100, 64, (0.64, 0, 13, 64, 38)),
    # portrait: 50*0.64 = 32 columns, (64 - 32) // 2 = 16 columns left
    (100, 50, 64, (0.64, 16, 0, 32, 64)),
    # upscaling a small image: scale 128/40 = 3.2, 30*3.2 = 96 rows, 16 above
    (30, 40, 128, (3.2, 0, 16, 128, 96)),
    (77, 77, 77, (1.0, 0, 0, 77, 77)),
    # 32*4/3 = 42.67 -> 43 rows, (64 - 43) // 2 = 10 above (11 below)
    (32, 48, 64, (4 / 3, 0, 10, 64, 43)),
    # a half exactly: 9 * 64/384 = 1.5 rounds up to 2 rows; (64 - 2) // 2 = 31
    (9, 384, 64, (1 / 6, 0, 31, 64, 2)),
    # a line: 1 * 64/200 = 0.32 -> 0, at least 1 row
    (1, 200, 64, (0.32, 0, 31, 64, 1)),
])
def test_transform_follows_the_documented_formula(height, width, size, expected):
    scale, pad_x, pad_y, resized_w, resized_h = expected
    t = _values(letterbox_transform(height, width, size))
    assert t["scale"] == pytest.approx(scale)
    assert (t["pad_x"], t["pad_y"], t["resized_w"], t["resized_h"]) == (pad_x, pad_y, resized_w, resized_h)
    assert (t["height"], t["width"]) == (height, width)
    assert letterbox_lengths(height, width, size) == (resized_h, resized_w, pad_y, pad_x)


def test_transform_of_vectors_and_in_a_graph():
    heights, widths = tf.constant([60, 100, 32], tf.int32), tf.constant([100, 50, 48], tf.int32)
    traced = tf.function(lambda h, w: letterbox_transform(h, w, S))
    t = _values(traced(heights, widths))
    assert t["pad_y"] == [13, 0, 10] and t["pad_x"] == [0, 16, 0]
    assert t["resized_h"] == [38, 64, 43] and t["resized_w"] == [64, 32, 64]


def test_the_integer_formula_is_the_rounded_real_one():
    """`letterbox_lengths` = max(floor(length * size / longest + 1/2), 1), checked with exact fractions."""
    from fractions import Fraction
    rng = np.random.default_rng(0)
    for height, width, size in [*rng.integers(1, 5000, (300, 3)).tolist(), (1, 10000, 64), (10000, 1, 640),
                                (3, 4097, 1024), (4097, 3, 1), (5, 5, 1)]:
        longest = max(height, width)
        rounded = [max(int(Fraction(length * size, longest) + Fraction(1, 2)), 1) for length in (height, width)]
        resized_h, resized_w, pad_y, pad_x = letterbox_lengths(height, width, size)
        assert [resized_h, resized_w] == rounded and max(resized_h, resized_w) == size
        assert (pad_y, pad_x) == ((size - resized_h) // 2, (size - resized_w) // 2)


@pytest.mark.parametrize("height, width", [(60, 100), (100, 50), (64, 64), (1, 200), (199, 3), (97, 131)])
def test_transform_vector_round_trip(height, width):
    transform = letterbox_transform(height, width, S)
    vector = transform_to_vector(transform)
    np.testing.assert_allclose(vector.numpy(), [64 / max(height, width), *[float(transform[k]) for k in
                                                ("pad_x", "pad_y")], height, width], rtol=1e-7)
    assert int(vector_frame_size(vector)) == S
    assert _values(transform_from_vector(vector)) == _values(transform)
    assert _values(transform_from_vector(vector, S)) == _values(transform)
    batch = transform_from_vector(tf.stack([vector, transform_to_vector(letterbox_transform(40, 30, S))]))
    assert _values(batch)["height"] == [height, 40]


def test_letterboxed_image_is_centred_on_grey():
    image = np.full((32, 48, 3), 200, np.uint8)  # scale 4/3 -> 43 x 64, pad_y = 10
    framed, transform = letterbox_image(tf.constant(image), S)
    framed = framed.numpy()
    assert framed.shape == (S, S, 3) and framed.dtype == np.float32
    np.testing.assert_allclose(framed[10:53], 200.0)
    np.testing.assert_allclose(framed[:10], PAD_PIXEL_VALUE)
    np.testing.assert_allclose(framed[53:], PAD_PIXEL_VALUE)
    assert _values(transform) == _values(letterbox_transform(32, 48, S))
    batch, transforms = letterbox_images(tf.constant(np.stack([image] * 2)), S)
    np.testing.assert_array_equal(batch.numpy(), [framed, framed])
    assert _values(transforms)["pad_y"] == [10, 10]


def test_nearest_source_index_is_half_pixel_nearest():
    # 2 -> 7 (upscale 3.5): output centres 0.5..6.5 read input (i + 0.5) * 2/7: 0.14, 0.43, 0.71, 1.0 (a tie: 1), ...
    np.testing.assert_array_equal(nearest_source_index(np.arange(7), 2, 7), [0, 0, 0, 1, 1, 1, 1])
    # 10 -> 7: (i + 0.5) * 10/7 = 0.71, 2.14, 3.57, 5.0, 6.43, 7.86, 9.29
    np.testing.assert_array_equal(nearest_source_index(np.arange(7), 10, 7), [0, 2, 3, 5, 6, 7, 9])


def test_letterboxed_masks_by_hand():
    masks = np.zeros((2, 30, 40), np.uint8)
    masks[0, 5:20, 3:17] = 1
    masks[1, 0:30, 35:40] = 1
    framed = letterbox_masks(tf.constant(masks), 80).numpy()  # exact 2x: rows 10..70 hold the image
    assert framed.shape == (2, 80, 80) and framed.dtype == np.uint8
    np.testing.assert_array_equal(framed[:, 10:70], masks.repeat(2, axis=1).repeat(2, axis=2))
    assert framed[:, :10].sum() == 0 and framed[:, 70:].sum() == 0
    labels = letterbox_masks(tf.constant(masks[:1]), 80, fill=255).numpy()
    assert np.all(labels[:, :10] == 255) and np.all(labels[:, 70:] == 255)


@pytest.mark.parametrize("height, width, size", [(60, 100, 64), (100, 50, 64), (30, 40, 128), (97, 131, 96)])
def test_boxes_round_trip_through_the_letterbox(height, width, size):
    rng = np.random.default_rng(height * width)
    xy = rng.uniform(0, [width, height], (20, 2, 2))
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1).astype(np.float32)
    transform = letterbox_transform(height, width, size)
    framed = boxes_to_frame(boxes, transform).numpy()
    assert np.all(framed >= 0) and np.all(framed <= size)
    np.testing.assert_allclose(boxes_to_original(framed, transform).numpy(), boxes, atol=1e-3)
    vector = transform_to_vector(transform).numpy()
    np.testing.assert_allclose(boxes_to_original(framed, vector).numpy(), boxes, atol=1e-3)
    np.testing.assert_allclose(boxes_to_original(framed[None], vector[None]).numpy()[0], boxes, atol=1e-3)


def test_boxes_to_original_handles_batches_padding_and_clipping():
    transforms = np.stack([transform_to_vector(letterbox_transform(60, 100, 64)).numpy(),
                           transform_to_vector(letterbox_transform(100, 50, 64)).numpy()])
    boxes = np.full((2, 3, 4), PAD_BOX_VALUE, np.float32)
    boxes[0, 0] = [6.4, 13 + 6.4, 32.0, 13 + 19.2]   # (10, 10, 50, 30) in the 100x60 image
    boxes[1, 0] = [16 + 3.2, 6.4, 16 + 16.0, 64.0]   # (5, 10, 25, 100) in the 50x100 image
    boxes[1, 1] = [0.0, -5.0, 60.0, 70.0]            # beyond the image on every side: clipped
    expected = np.full((2, 3, 4), PAD_BOX_VALUE, np.float32)
    expected[0, 0] = [10, 10, 50, 30]
    expected[1, 0] = [5, 10, 25, 100]
    expected[1, 1] = [0, 0, 50, 100]
    np.testing.assert_allclose(boxes_to_original(boxes, transforms).numpy(), expected, atol=1e-4)
    as_dict = transform_from_vector(transforms)
    np.testing.assert_allclose(boxes_to_original(boxes, as_dict).numpy(), expected, atol=1e-4)


def test_boxes_to_original_by_hand():
    # 32 x 48: scale 4/3, resized 43 x 64, pad_x 0, pad_y 10.  80 x 40: scale 0.8, resized 64 x 32, pad_x 16.
    transform = letterbox_transform(tf.constant([32, 80]), tf.constant([48, 40]), S)
    frame = np.tile(np.array([[[16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 64.0, 64.0]]], np.float32), [2, 1, 1])
    expected = [[[12.0, 0.0, 36.0, 22.5], [0.0, 0.0, 48.0, 32.0]],
                [[0.0, 10.0, 40.0, 50.0], [0.0, 0.0, 40.0, 80.0]]]
    np.testing.assert_allclose(boxes_to_original(frame, transform).numpy(), expected, atol=1e-4)


def _half_frame_logits(stride: int) -> tf.Tensor:
    """`[S/stride, S/stride, 2]` logits: class 1 right of the frame's centre line x = 32, class 0 left."""
    n = S // stride
    x = (tf.range(n, dtype=tf.float32) + 0.5) * stride - S / 2
    return tf.tile(tf.stack([-x, x], axis=-1)[tf.newaxis], [n, 1, 1])


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_dense_maps_go_back_by_hand(stride):
    # 40 x 30: scale 1.6, resized 64 x 48, pad_x 8: frame x > 32 <=> (col + 0.5) * 1.6 + 8 > 32 <=> col >= 15.
    transform = letterbox_transform(40, 30, S)
    logits = _half_frame_logits(stride)
    scores = dense_to_original(logits, transform, S, 40, 30, "bilinear")
    assert scores.shape == (40, 30, 2) and scores.dtype == tf.float32
    class_map = tf.argmax(scores, axis=-1).numpy()
    np.testing.assert_array_equal(class_map[:, :15], 0)
    np.testing.assert_array_equal(class_map[:, 15:], 1)
    ids = tf.argmax(logits, axis=-1, output_type=tf.int32)[..., tf.newaxis]
    nearest = dense_to_original(ids, transform, S, 40, 30, "nearest")
    assert nearest.dtype == tf.int32
    np.testing.assert_array_equal(nearest.numpy()[..., 0], class_map)
    with pytest.raises(ValueError, match="bilinear"):
        dense_to_original(logits, transform, S, 40, 30, "bicubic")


def test_bilinear_samples_never_reach_into_the_padding():
    # 20 x 64: pad_y 22, 20 rows of image. The model says 1 on the image, 100 on the padding.
    transform = letterbox_transform(20, 64, S)
    dense = np.full((S, S, 1), 100.0, np.float32)
    dense[22:42] = 1.0
    np.testing.assert_array_equal(dense_to_original(dense, transform, S, 20, 64, "bilinear").numpy(), 1.0)


def test_masks_go_back_by_hand():
    # 32 x 32 at 64: scale 2, no padding; original pixel r samples frame pixels 2r and 2r+1 equally.
    transform = letterbox_transform(32, 32, S)
    masks = np.zeros((3, S, S), np.float32)
    masks[0, 8:40, 16:48] = 0.9
    masks[1, 8:40, 16:48] = 0.3                       # below the 0.5 threshold everywhere
    masks[2] = 1.0
    restored = masks_to_original(masks, transform, S).numpy()
    assert restored.shape == (3, 32, 32) and restored.dtype == np.uint8
    expected = np.zeros((32, 32), np.uint8)
    expected[4:20, 8:24] = 1
    np.testing.assert_array_equal(restored[0], expected)
    assert restored[1].sum() == 0 and restored[2].all()
    binary = masks_to_original((masks > 0.5).astype(np.uint8), transform_to_vector(transform), S).numpy()
    np.testing.assert_array_equal(binary[0], expected)
    assert masks_to_original(np.zeros((0, S, S), np.float32), transform, S).shape == (0, 32, 32)


@pytest.mark.parametrize("height, width, size", [(30, 40, 80), (17, 53, 64), (64, 5, 32)])
def test_masks_round_trip_through_the_letterbox(height, width, size):
    rng = np.random.default_rng(height)
    masks = np.zeros((4, height, width), np.uint8)
    for m in masks:
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        m[y0:y0 + height // 2, x0:x0 + width // 2] = 1
    framed = letterbox_masks(masks, size)
    restored = masks_to_original(framed, letterbox_transform(height, width, size), size).numpy()
    if size % max(height, width) == 0:  # an integer upscale: exact
        np.testing.assert_array_equal(restored, masks)
    else:  # resampling twice moves an edge by at most one original pixel
        assert np.mean(restored != masks) < 0.15 and np.all(np.abs(restored.sum((1, 2)) - masks.sum((1, 2)))
                                                            <= 2 * (height + width))
