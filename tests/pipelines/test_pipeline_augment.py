"""Augmentation: boxes, masks and classes stay with their objects, under a seed.

The objects are flat colours (conftest), so where an object really is after
augmentation can be read from the pixels, independently of the boxes and masks the
augmenter returns.
"""

import numpy as np
import pytest

from drawn_datasets import BACKGROUND, SQUARE, DrawnImage, DrawnObject, random_drawn_images, render
from detseg.pipelines.augment import AugmentConfig, BoxMaskAugmenter, build_augmentation, tight_boxes

# Geometry only (colour jitter/blur would change the colours the test looks for), strong
# enough that objects get cut by the border and some are dropped.
GEOMETRY = AugmentConfig(horizontal_flip=0.5, vertical_flip=0.5, crop=0.5, affine=1.0, scale_range=(0.6, 1.6),
                         translate_range=(-0.35, 0.35), color_jitter=0.0, blur=0.0, min_visibility=0.3)


def colour_region(image: np.ndarray, colour) -> np.ndarray:
    """`bool [H, W]`: pixels of (nearly) exactly `colour`; blended edge pixels do not count."""
    return np.abs(image.astype(np.int16) - np.array(colour, np.int16)).max(axis=-1) <= 6


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation of a `bool [H, W]` mask."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion; outside the image counts as background (edge pixels blend with the fill)."""
    return ~dilate(~np.pad(mask, 1))[1:-1, 1:-1]


def test_boxes_masks_and_objects_stay_together_over_many_draws():
    augmenter = BoxMaskAugmenter(GEOMETRY)
    images = random_drawn_images(8, seed=11)
    draws = dropped = 0
    for image_spec in images:
        pixels, visible = render(image_spec)
        masks = np.stack(visible).astype(np.uint8)
        boxes = tight_boxes(masks)[0]
        for seed in range(30):
            out = augmenter(pixels, boxes, seed, instance_masks=masks)
            draws += 1
            assert len(out.boxes) == len(out.kept) == len(out.instance_masks), "masks of dropped boxes remain"
            assert len(out.kept) >= 1, "an image with objects lost all of them"
            dropped += len(boxes) - len(out.kept)
            assert out.instance_masks.shape[1:] == out.image.shape[:2]
            for box, k, mask in zip(out.boxes, out.kept, out.instance_masks):
                region = colour_region(out.image, image_spec.objects[k].colour)
                # The mask returned for object k is where object k's colour is ...
                assert not (region & ~dilate(mask.astype(bool))).any(), "object pixels outside its mask"
                inner = erode(mask.astype(bool))
                assert region[inner].mean() > 0.97, "mask covers pixels of another colour"
                # ... and the box encloses the mask and is tight on it.
                rows, cols = np.nonzero(mask)
                assert box[0] <= cols.min() and box[1] <= rows.min()
                assert box[2] >= cols.max() + 1 and box[3] >= rows.max() + 1
                tight = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                assert np.abs(box - tight).max() <= 1.0
    assert draws == 240 and dropped > 0, "the draws never dropped an object: the test proves nothing"


def test_boxes_without_masks_follow_the_object_pixels():
    augmenter = BoxMaskAugmenter(GEOMETRY)
    for image_spec in random_drawn_images(4, seed=5):
        pixels, visible = render(image_spec)
        boxes = tight_boxes(np.stack(visible))[0]
        for seed in range(15):
            out = augmenter(pixels, boxes, seed)
            assert out.instance_masks is None and len(out.boxes) == len(out.kept)
            for box, k in zip(out.boxes, out.kept):
                obj = image_spec.objects[k]
                region = colour_region(out.image, obj.colour)
                if obj.category_id != SQUARE or region.sum() < 4:
                    continue  # corners of a disc's box are background: only squares fill their box
                rows, cols = np.nonzero(region)
                tight = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                assert np.abs(box - tight).max() <= 2.0


def test_same_seed_same_output_and_different_seeds_differ():
    augmenter = BoxMaskAugmenter(AugmentConfig())  # everything on, colour and blur too
    pixels, visible = render(random_drawn_images(1, seed=2)[0])
    masks = np.stack(visible).astype(np.uint8)
    boxes = tight_boxes(masks)[0]
    first = augmenter(pixels, boxes, 1234, instance_masks=masks)
    again = BoxMaskAugmenter(AugmentConfig())(pixels, boxes, 1234, instance_masks=masks)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    np.testing.assert_array_equal(first.instance_masks, again.instance_masks)
    others = [augmenter(pixels, boxes, seed, instance_masks=masks).image for seed in range(5)]
    assert sum(o.shape != first.image.shape or not np.array_equal(o, first.image) for o in others) >= 4


def test_transforms_do_not_share_one_coin():
    """Seeding every transform with the same seed would make all p=0.5 draws agree."""
    config = AugmentConfig(horizontal_flip=0.5, vertical_flip=0.5, crop=0.0, affine=0.0, color_jitter=0.0, blur=0.0)
    augmenter = BoxMaskAugmenter(config)
    image = np.zeros((20, 30, 3), np.uint8)
    image[:5, :5] = 255  # a marker in the top-left corner
    outcomes = set()
    for seed in range(40):
        out = augmenter(image, np.zeros((0, 4), np.float32), seed).image
        outcomes.add((bool(out[:, :15].any()), bool(out[:10].any())))  # (not h-flipped, not v-flipped)
    assert outcomes == {(True, True), (True, False), (False, True), (False, False)}


@pytest.mark.parametrize("config", [AugmentConfig.off(), AugmentConfig(
    horizontal_flip=0, crop=0, affine=0, color_jitter=0, blur=0)])
def test_disabled_augmentation_is_the_identity(config):
    assert build_augmentation(config) is None
    pixels, visible = render(random_drawn_images(1, seed=3)[0])
    boxes = tight_boxes(np.stack(visible))[0]
    out = BoxMaskAugmenter(config)(pixels, boxes, 7)
    assert out.image is pixels and np.array_equal(out.boxes, boxes)


def test_semantic_map_moves_with_the_image_and_fills_exposed_borders():
    augmenter = BoxMaskAugmenter(AugmentConfig(horizontal_flip=0, crop=0, affine=1.0, translate_range=(0.3, 0.3),
                                               scale_range=(1.0, 1.0), color_jitter=0, blur=0),
                                 semantic_fill=255)
    image_spec = DrawnImage("x.png", 40, 60, (DrawnObject(SQUARE, (10, 10, 30, 30), (250, 0, 0)),))
    pixels, visible = render(image_spec)
    semantic = visible[0].astype(np.uint8) * 2
    out = augmenter(pixels, tight_boxes(np.stack(visible))[0], 0, semantic=semantic)
    red = colour_region(out.image, (250, 0, 0))
    np.testing.assert_array_equal(out.semantic == 2, red)
    exposed = colour_region(out.image, (114, 114, 114))  # canvas fill where the image moved away
    assert exposed.sum() > 100 and np.all(out.semantic[exposed] == 255)
    assert not colour_region(out.image, BACKGROUND).any() or np.all(
        out.semantic[colour_region(out.image, BACKGROUND)] == 0)


@pytest.mark.parametrize("field, value", [("horizontal_flip", 1.5), ("scale_range", (0.0, 1.0)),
                                          ("translate_range", (0.2, 0.1)), ("blur_limit", 4), ("hue", 0.7)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        AugmentConfig(**{field: value})


def test_config_accepts_yaml_lists():
    assert AugmentConfig(scale_range=[0.5, 2]).scale_range == (0.5, 2.0)
