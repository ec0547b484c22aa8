"""The pipeline's numpy/OpenCV letterbox: its golden values, and that it equals models.ops.letterbox.

The transform has one implementation (`detseg.models.ops.letterbox`, TF); the pipeline
keeps a fast numpy twin for per-example work. These tests prove the twin equal to it:
the same transform for many sizes (odd, tiny, huge, extreme aspect ratios), pixels within
one grey level, masks and boxes exactly.
"""

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.ops import letterbox as ops
from detseg.pipelines.augment import tight_boxes
from detseg.pipelines.letterbox import (PAD_PIXEL_VALUE, LetterboxTransform, letterbox_boxes, letterbox_image,
                                        letterbox_masks, letterbox_params)


def _many_sizes() -> list[tuple[int, int, int]]:
    """(height, width, size): every small shape, odd sizes, random large ones, extreme aspects."""
    small = [(h, w, s) for h in range(1, 41) for w in range(1, 41) for s in (1, 7, 32, 63)]
    rng = np.random.default_rng(0)
    large = [tuple(v) for v in rng.integers(1, 6000, (2000, 2)).tolist()]
    large = [(h, w, s) for (h, w), s in zip(large, rng.choice([64, 96, 127, 320, 416, 640, 1024, 1333], 2000))]
    extreme = [(1, 10000, 640), (10000, 1, 640), (3, 4097, 1024), (4097, 3, 1024), (2, 99999, 64),
               (99999, 99998, 1333), (5000, 4999, 1), (9, 384, 64), (480, 640, 416), (1080, 1920, 640)]
    return small + large + extreme


def test_pipeline_transform_equals_the_tf_transform_over_many_sizes():
    sizes = _many_sizes()
    heights, widths, frames = (np.array(column) for column in zip(*sizes))
    ours = [letterbox_params(h, w, s) for h, w, s in sizes]
    for frame in np.unique(frames):  # one vectorized TF call per model size
        rows = np.flatnonzero(frames == frame)
        tf_values = {k: v.numpy() for k, v in ops.letterbox_transform(heights[rows], widths[rows], int(frame)).items()}
        pipeline = {
            "scale": np.array([np.float32(ours[i].scale) for i in rows]),
            "pad_x": np.array([ours[i].pad_x for i in rows]), "pad_y": np.array([ours[i].pad_y for i in rows]),
            "resized_h": np.array([ours[i].resized_height for i in rows]),
            "resized_w": np.array([ours[i].resized_width for i in rows]),
            "height": heights[rows], "width": widths[rows],
        }
        for key in ops.TRANSFORM_KEYS:
            np.testing.assert_array_equal(pipeline[key].astype(np.float32), tf_values[key], err_msg=f"{key}, S={frame}")
        vectors = np.stack([ours[i].as_array() for i in rows])
        np.testing.assert_array_equal(vectors, ops.transform_to_vector(tf_values).numpy())


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
    assert LetterboxTransform.from_array(t.as_array()) == letterbox_params(height, width, size)


def test_letterbox_params_reject_empty_images():
    with pytest.raises(ValueError, match="positive"):
        letterbox_params(0, 10, 64)


def test_letterbox_image_places_the_image_on_a_grey_canvas():
    image = np.full((60, 100, 3), 200, np.uint8)
    out = letterbox_image(image, letterbox_params(60, 100, 64), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert np.all(out[13:51] == 200)
    assert np.all(out[:13] == PAD_PIXEL_VALUE) and np.all(out[51:] == PAD_PIXEL_VALUE)


@pytest.mark.parametrize("size", [64, 96])
def test_pipeline_pixels_are_within_one_grey_level_of_the_tf_letterbox(size):
    rng = np.random.default_rng(size)
    shapes = [(60, 100), (100, 50), (40, 40), (1, 200), (200, 1), (3, 517), (97, 131), (480, 640), (31, 29),
              *[tuple(v) for v in rng.integers(1, 400, (25, 2)).tolist()]]
    for height, width in shapes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        t = letterbox_params(height, width, size)
        framed, transform = ops.letterbox_image(tf.constant(image), size)
        np.testing.assert_array_equal(ops.transform_to_vector(transform).numpy(), t.as_array())
        # OpenCV interpolates uint8 in fixed point and rounds to whole grey levels.
        difference = np.abs(framed.numpy() - letterbox_image(image, t, size))
        assert difference.max() <= 1.0, (height, width, difference.max())
        # Fed float32, OpenCV and TF agree to a small fraction of a grey level.
        assert np.abs(framed.numpy() - letterbox_image(image.astype(np.float32), t, size)).max() < 0.02


def test_pipeline_masks_and_boxes_equal_the_tf_letterbox_exactly():
    rng = np.random.default_rng(1)
    shapes = [(60, 100, 64), (100, 50, 96), (31, 47, 128), (2, 7, 64), (7, 2, 45), (1, 300, 64), (300, 1, 63),
              *[(*v, s) for v, s in zip(rng.integers(1, 300, (40, 2)).tolist(), rng.choice([32, 63, 64, 127], 40))]]
    for height, width, size in shapes:
        t = letterbox_params(height, width, size)
        masks = rng.integers(0, 2, (3, height, width), dtype=np.uint8)
        np.testing.assert_array_equal(letterbox_masks(masks, t, size), ops.letterbox_masks(masks, size).numpy())
        labels = rng.integers(0, 5, (1, height, width), dtype=np.uint8)
        np.testing.assert_array_equal(letterbox_masks(labels, t, size, fill=255),
                                      ops.letterbox_masks(labels, size, fill=255).numpy())
        xy = rng.uniform(0, [width, height], (10, 2, 2))
        boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1).astype(np.float32)
        np.testing.assert_array_equal(letterbox_boxes(boxes, t), ops.boxes_to_frame(boxes, t.as_array()).numpy())


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
    np.testing.assert_array_equal(ops.masks_to_original(framed, t.as_array(), 80).numpy(), masks)


@pytest.mark.parametrize("height, width, size", [(60, 100, 64), (100, 50, 64), (30, 40, 128), (97, 131, 96)])
def test_boxes_round_trip_through_the_letterbox(height, width, size):
    rng = np.random.default_rng(height * width)
    xy = rng.uniform(0, [width, height], (20, 2, 2))
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1).astype(np.float32)
    t = letterbox_params(height, width, size)
    framed = letterbox_boxes(boxes, t)
    assert np.all(framed >= 0) and np.all(framed <= size)
    np.testing.assert_allclose(ops.boxes_to_original(framed, t.as_array()).numpy(), boxes, atol=1e-3)
