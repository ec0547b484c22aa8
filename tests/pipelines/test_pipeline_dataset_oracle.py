"""Through `build_dataset`: augmented boxes, classes and masks follow the pixels.

The augmenter test checks `BoxMaskAugmenter` alone; here the whole pipeline runs (decode,
augment, letterbox, pad, batch) and the batch is read back with the same colour-region
oracle: every object of a drawn image has its own flat colour, so the colour under a
returned mask says which object it is, and that object's class must be the class in the
same row, also after augmentation dropped some objects (rows shift up when one goes).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from drawn_datasets import BACKGROUND, CLASS_INDEX, random_drawn_images
from test_pipeline_augment import GEOMETRY, colour_region, dilate, erode
from detseg.pipelines import PAD_CLASS, build_dataset
from detseg.pipelines.augment import tight_boxes

# The drawn images are 96 x 72: at 96 px the letterbox never shrinks (scale 1, or > 1 after a
# crop), and a nearest-neighbour mask scaled up stays within 1 px of its scaled box. Shrunk
# (64 px), the mask loses the one-pixel tips of rotated corners, up to ~1.8 px: resampling,
# not an offset (seen with tf.random.set_seed(2)); the letterbox tests cover the shrinking.
SIZE = 96


def nearest_colour(image: np.ndarray, colours) -> np.ndarray:
    """`int [H, W]`: index of the colour in `colours` nearest to each pixel (a blended edge
    pixel goes to the colour it is mostly made of)."""
    distances = np.linalg.norm(image[..., None, :].astype(np.float32) - np.array(colours, np.float32), axis=-1)
    return distances.argmin(axis=-1)


def owner(image: np.ndarray, mask: np.ndarray, objects) -> int:
    """Index of the drawn object whose colour fills most of `mask`'s pixels."""
    counts = [colour_region(image, obj.colour)[mask].sum() for obj in objects]
    return int(np.argmax(counts))


def test_pipeline_batches_keep_boxes_classes_and_masks_on_their_objects(drawn_dataset):
    # The augmentation draws come from `Dataset.random(seed)`, which TF combines with the
    # global seed: fix it, or the draws depend on which tests ran before. (Some other draws
    # gave thin-object failures at 64 px: resampling, see SIZE; 12 global seeds pass now.)
    tf.random.set_seed(0)
    drawn = random_drawn_images(6, seed=11)
    dataset = drawn_dataset(drawn)
    rows = dropped = 0
    for seed in range(4):
        x, y = next(iter(build_dataset(dataset, "instance", SIZE, batch_size=len(drawn), augment=GEOMETRY,
                                       seed=seed, max_objects=8)))
        images, boxes, classes, masks = (x.numpy().astype(np.uint8), y["boxes"].numpy(),
                                         y["classes"].numpy(), y["masks"].numpy().astype(bool))
        for b, spec in enumerate(drawn):  # no shuffle: batch row b is image b
            valid = classes[b] != PAD_CLASS
            dropped += len(spec.objects) - int(valid.sum())
            owners = []
            for box, class_index, mask in zip(boxes[b][valid], classes[b][valid], masks[b][valid]):
                k = owner(images[b], mask, spec.objects)
                owners.append(k)
                rows += 1
                assert class_index == CLASS_INDEX[spec.objects[k].category_id], "class left its object"
                region = colour_region(images[b], spec.objects[k].colour)
                assert not (region & ~dilate(mask)).any(), "object pixels outside its mask"
                # Two pixels in from the mask's edge (an affine scale of 1.6 stretches the image's
                # linear edge blend, the mask is nearest-neighbour), the pixels are the object's
                # colour or blends mostly of it; a mask moved onto background or another object fails.
                inner = erode(erode(mask))
                if inner.sum() >= 4:
                    palette = [BACKGROUND, *(o.colour for o in spec.objects)]
                    mostly_object = nearest_colour(images[b], palette) == k + 1
                    assert mostly_object[inner].mean() > 0.95, "mask covers pixels of another colour"
                tight = tight_boxes(mask[None].astype(np.uint8))[0][0]
                assert np.abs(box - tight).max() <= 1.0, "box not tight on its mask"
            assert len(set(owners)) == len(owners), "two rows claim the same object"
            assert not masks[b][~valid].any()
    assert rows > 20 and dropped > 0, "no object was dropped: the pairing after a drop went untested"
