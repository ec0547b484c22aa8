"""Drawing boxes, labels and masks: which pixels change, shapes of panels, colours, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detseg.data.draw import (MASK_ALPHA, PANEL_GAP, class_colour, draw_annotations, draw_semantic,
                              image_grid, save_png, side_by_side)
from detseg.data.errors import DatasetError

GREY = 128


def _grey(height=96, width=128):
    return np.full((height, width, 3), GREY, np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_box_border_pixels_change_and_the_interior_does_not():
    image = _grey()
    out = draw_annotations(image, np.array([[10, 20, 50, 60]], np.float32), [""])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, _grey())  # input untouched
    changed = _changed(image, out)
    assert changed[20, 10:50].all() and changed[59, 10:50].all()  # top and bottom edges
    assert changed[20:60, 10].all() and changed[20:60, 49].all()  # left and right edges
    assert not changed[25:55, 15:45].any()
    assert not changed[61:, :].any() and not changed[:, 51:].any()


def test_mask_overlay_changes_only_masked_box_and_label_pixels():
    image = _grey()
    box = np.array([[20, 40, 80, 90]], np.float32)  # room above it for the label tag
    mask = np.zeros((1, 96, 128), np.uint8)
    mask[0, 50:80, 30:70] = 1
    out = draw_annotations(image, box, ["circle"], scores=[0.9], masks=mask, class_ids=[1])
    changed = _changed(image, out)
    assert changed[mask[0].astype(bool)].all()
    inside_border = np.zeros((96, 128), bool)
    inside_border[43:87, 23:77] = True
    assert not changed[inside_border & ~mask[0].astype(bool)].any()
    assert not changed[:, 90:].any()  # right of the box and its tag
    assert changed[25:40, 20:60].any()  # the tag sits above the box
    assert not changed[:20, :].any()
    # The blend inside the mask (away from the border) is the class colour at MASK_ALPHA.
    expected = np.rint((1 - MASK_ALPHA) * GREY + MASK_ALPHA * np.array(class_colour(1)))
    assert np.array_equal(out[65, 50], expected.astype(np.uint8))


def test_colours_are_fixed_per_class_id():
    assert class_colour(3) == class_colour(3)
    colours = {class_colour(i) for i in range(20)}
    assert len(colours) == 20
    image = _grey()
    boxes = np.array([[5, 30, 25, 50], [60, 30, 90, 60]], np.float32)
    out = draw_annotations(image, boxes, ["", ""], class_ids=[2, 2])
    assert tuple(out[30, 10]) == tuple(out[30, 70]) == class_colour(2)


def test_scores_are_written_in_the_tag():
    image = _grey()
    box = np.array([[10, 40, 60, 80]], np.float32)
    plain = _changed(image, draw_annotations(image, box, ["a"]))
    scored = _changed(image, draw_annotations(image, box, ["a"], scores=[0.75]))
    assert scored[:40].sum() > plain[:40].sum() > 0  # a wider tag above the box


def test_no_boxes_returns_an_unchanged_copy():
    image = _grey()
    out = draw_annotations(image, np.zeros((0, 4), np.float32), [], masks=np.zeros((0, 96, 128), bool))
    assert np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("kwargs, field", [
    ({"boxes": np.zeros((2, 5)), "labels": ["a", "b"]}, "boxes"),
    ({"boxes": np.zeros((2, 4)), "labels": ["a"]}, "labels"),
    ({"boxes": np.zeros((1, 4)), "labels": ["a"], "scores": [0.1, 0.2]}, "scores"),
    ({"boxes": np.zeros((1, 4)), "labels": ["a"], "masks": np.zeros((1, 10, 10))}, "masks"),
])
def test_mismatched_inputs_name_the_field(kwargs, field):
    with pytest.raises(DatasetError, match=field):
        draw_annotations(_grey(), **kwargs)


def test_semantic_overlay_leaves_background_and_ignore_pixels():
    image = _grey(32, 32)
    labels = np.zeros((32, 32), np.uint8)
    labels[:, 10:20] = 2
    labels[:, 20:] = 255
    out = draw_semantic(image, labels, num_classes=3)
    changed = _changed(image, out)
    assert changed[:, 10:20].all()
    assert not changed[:, :10].any() and not changed[:, 20:].any()
    everything = draw_semantic(image, labels, num_classes=3, background_label=None)
    assert _changed(image, everything)[:, :20].all()
    labels[0, 0] = 7
    with pytest.raises(DatasetError, match="7"):
        draw_semantic(image, labels, num_classes=3)
    with pytest.raises(DatasetError, match="shape"):
        draw_semantic(image, labels[:10], num_classes=3)


def test_side_by_side_places_panels_under_titles():
    left = np.zeros((40, 30, 3), np.uint8)
    right = np.full((50, 20), 200, np.uint8)  # grey input becomes RGB
    row = side_by_side([left, right])
    assert row.shape == (50, 30 + PANEL_GAP + 20, 3) and row.dtype == np.uint8
    assert (row[:40, :30] == 0).all() and (row[:, 30 + PANEL_GAP:] == 200).all()
    titled = side_by_side([left, right], titles=["truth", "prediction"])
    strip = titled.shape[0] - 50
    assert 0 < strip < 40
    assert (titled[strip:strip + 40, :30] == 0).all()
    assert (titled[:strip, :30] != 255).any()  # the title's text is drawn
    with pytest.raises(DatasetError, match="titles"):
        side_by_side([left, right], titles=["only one"])


def test_image_grid_fills_rows_of_columns():
    images = [np.full((10, 12, 3), 20 * i, np.uint8) for i in range(5)]
    grid = image_grid(images, columns=2)
    assert grid.shape == (3 * 10 + 2 * PANEL_GAP, 2 * 12 + PANEL_GAP, 3)
    for i in range(5):
        top, left = (i // 2) * (10 + PANEL_GAP), (i % 2) * (12 + PANEL_GAP)
        assert (grid[top:top + 10, left:left + 12] == 20 * i).all()
    assert (grid[2 * (10 + PANEL_GAP):, 12 + PANEL_GAP:] == 255).all()  # the empty sixth cell
    with pytest.raises(DatasetError, match="columns"):
        image_grid(images, columns=0)


def test_save_png_round_trips(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "deep" / "picture.png")
    with Image.open(path) as saved:
        assert saved.mode == "RGB"
        assert np.array_equal(np.asarray(saved), image)


def test_float_images_are_accepted(synthetic_train):
    record = next(r for r in synthetic_train.images if r.annotations)
    with Image.open(synthetic_train.image_path(record)) as png:
        pixels = np.asarray(png).astype(np.float32)
    masks = np.stack([a.mask(record.height, record.width) for a in record.annotations])
    names = {c.id: c.name for c in synthetic_train.categories}
    out = draw_annotations(pixels, record.boxes_xyxy(), [names[a.category_id] for a in record.annotations],
                           masks=masks, class_ids=[a.category_id for a in record.annotations])
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    assert _changed(pixels.astype(np.uint8), out)[masks.any(axis=0)].mean() > 0.9
