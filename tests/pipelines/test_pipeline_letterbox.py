"""Letterbox: the documented formula, placement, and the way back to original pixels."""

import numpy as np
import pytest
import tensorflow as tf

from detseg.pipelines.augment import tight_boxes
from detseg.pipelines.batch_contract import PAD_BOX_VALUE
from detseg.pipelines.letterbox import (PAD_PIXEL_VALUE, LetterboxTransform, boxes_to_original, boxes_to_original_tf,
                                        letterbox_boxes, letterbox_image, letterbox_image_tf, letterbox_masks,
                                        letterbox_params, masks_to_original)


@pytest.mark.parametrize("height, width, size, expected", [
    # scale = 64/100; short side 60*0.64 = 38.4 -> 38 rows; (64 - 38) // 2 = 13 rows above
    (60, 100, 64, (0.64, 0, 13, 64, 38)),
    # portrait: 50*0.64 = 32 columns, (64 - 32) // 2 = 16 columns left
    (100, 50, 64, (0.64, 16, 0, 32, 64)),
    # upscaling a small image: scale 128/40 = 3.2, 30*3.2 = 96 rows, 16 above
    (30, 40, 128, (3.2, 0, 16, 128, 96)),
    (77, 77, 77, (1.0, 0, 0, 77, 77)),
])
def test_letterbox_params_follow_the_documented_formula(height, width, size, expected):
    t = letterbox_params(height, width, size)
    scale, pad_x, pad_y, resized_w, resized_h = expected
    assert t.scale == pytest.approx(scale)
    assert (t.pad_x, t.pad_y, t.resized_width, t.resized_height) == (pad_x, pad_y, resized_w, resized_h)
    assert (t.height, t.width) == (height, width)
    back = LetterboxTransform.from_array(t.as_array())
    assert (back.pad_x, back.pad_y, back.height, back.width) == (pad_x, pad_y, height, width)
    assert back.scale == pytest.approx(scale) and back.resized_height == resized_h


def test_letterbox_params_reject_empty_images():
    with pytest.raises(ValueError, match="positive"):
        letterbox_params(0, 10, 64)


def test_letterbox_image_places_the_image_on_a_grey_canvas():
    image = np.full((60, 100, 3), 200, np.uint8)
    out = letterbox_image(image, letterbox_params(60, 100, 64), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert np.all(out[13:51] == 200)
    assert np.all(out[:13] == PAD_PIXEL_VALUE) and np.all(out[51:] == PAD_PIXEL_VALUE)


@pytest.mark.parametrize("height, width, size", [(60, 100, 64), (100, 50, 64), (30, 40, 128), (97, 131, 96)])
def test_boxes_round_trip_through_the_letterbox(height, width, size):
    rng = np.random.default_rng(height * width)
    xy = rng.uniform(0, [width, height], (20, 2, 2))
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1).astype(np.float32)
    t = letterbox_params(height, width, size)
    framed = letterbox_boxes(boxes, t)
    assert np.all(framed >= 0) and np.all(framed <= size)
    np.testing.assert_allclose(boxes_to_original(framed, t), boxes, atol=1e-3)
    np.testing.assert_allclose(boxes_to_original(framed, t.as_array()), boxes, atol=1e-3)
    restored_tf = boxes_to_original_tf(framed[None], t.as_array()[None]).numpy()[0]
    np.testing.assert_allclose(restored_tf, boxes, atol=1e-3)


def test_boxes_to_original_handles_batches_padding_and_clipping():
    transforms = np.stack([letterbox_params(60, 100, 64).as_array(), letterbox_params(100, 50, 64).as_array()])
    boxes = np.full((2, 3, 4), PAD_BOX_VALUE, np.float32)
    boxes[0, 0] = [6.4, 13 + 6.4, 32.0, 13 + 19.2]   # (10, 10, 50, 30) in the 100x60 image
    boxes[1, 0] = [16 + 3.2, 6.4, 16 + 16.0, 64.0]   # (5, 10, 25, 100) in the 50x100 image
    boxes[1, 1] = [0.0, -5.0, 60.0, 70.0]            # beyond the image on every side: clipped
    expected = np.full((2, 3, 4), PAD_BOX_VALUE, np.float32)
    expected[0, 0] = [10, 10, 50, 30]
    expected[1, 0] = [5, 10, 25, 100]
    expected[1, 1] = [0, 0, 50, 100]
    np.testing.assert_allclose(boxes_to_original(boxes, transforms), expected, atol=1e-4)
    np.testing.assert_allclose(boxes_to_original_tf(boxes, transforms).numpy(), expected, atol=1e-4)


def test_letterboxed_masks_stay_inside_their_letterboxed_boxes():
    rng = np.random.default_rng(3)
    for height, width, size in [(60, 100, 64), (100, 50, 96), (31, 47, 128)]:
        t = letterbox_params(height, width, size)
        masks = np.zeros((6, height, width), np.uint8)
        for m in masks:
            x0, y0 = rng.integers(0, width - 5), rng.integers(0, height - 5)
            m[y0:rng.integers(y0 + 5, height + 1), x0:rng.integers(x0 + 5, width + 1)] = 1
        framed_masks = letterbox_masks(masks, t, size)
        assert framed_masks.shape == (6, size, size) and framed_masks.dtype == np.uint8
        framed_boxes = letterbox_boxes(tight_boxes(masks)[0], t)
        mask_boxes, visible = tight_boxes(framed_masks)
        assert visible.all()
        # Nearest-neighbour at half-pixel centres: a mask pixel's centre lies inside the box.
        np.testing.assert_allclose(mask_boxes, framed_boxes, atol=1.0)


def test_masks_round_trip_through_the_letterbox():
    masks = np.zeros((2, 30, 40), np.uint8)
    masks[0, 5:20, 3:17] = 1
    masks[1, 0:30, 35:40] = 1
    t = letterbox_params(30, 40, 80)  # exact 2x upscale: the way back is exact
    framed = letterbox_masks(masks, t, 80)
    assert framed[:, :t.pad_y].sum() == 0 and framed[:, t.pad_y + t.resized_height:].sum() == 0
    np.testing.assert_array_equal(masks_to_original(framed, t), masks)
    np.testing.assert_array_equal(masks_to_original(framed, t.as_array()), masks)


def test_in_graph_letterbox_matches_the_numpy_one():
    rng = np.random.default_rng(0)
    for height, width in [(60, 100), (100, 50), (40, 40)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        t = letterbox_params(height, width, 64)
        pixels, transform = letterbox_image_tf(tf.constant(image), 64)
        np.testing.assert_allclose(transform.numpy(), t.as_array(), rtol=1e-6)
        # OpenCV interpolates uint8 in fixed point: at most a grey level or two apart.
        assert np.abs(pixels.numpy() - letterbox_image(image, t, 64)).max() <= 2.0
