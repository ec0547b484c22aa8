"""Hand-drawn datasets for the pipeline tests: flat-coloured objects on a grey background.

Every object of an image has its own colour, so a test can find an object's pixels in
an augmented image by colour alone and check the box, mask and class that claim to be it.
Category ids are non-contiguous and listed out of order (7 before 3): class index 0 is
COCO id 3 ("disc"), index 1 is COCO id 7 ("square").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detseg.data.coco import CocoDataset, encode_mask, load_coco, write_coco

CATEGORIES = [{"id": 7, "name": "square"}, {"id": 3, "name": "disc"}]
SQUARE, DISC = 7, 3
CLASS_INDEX = {DISC: 0, SQUARE: 1}
BACKGROUND = (60, 60, 60)
PALETTE = [(230, 30, 30), (30, 220, 40), (40, 60, 235), (240, 230, 20), (220, 30, 220), (20, 220, 230),
           (250, 140, 0), (140, 0, 250)]


@dataclass(frozen=True)
class DrawnObject:
    """An object drawn as a flat `colour`: a filled box (SQUARE) or the ellipse inside it (DISC)."""

    category_id: int
    box: tuple[int, int, int, int]  # xyxy, pixel edges
    colour: tuple[int, int, int]
    iscrowd: int = 0


@dataclass(frozen=True)
class DrawnImage:
    file_name: str
    height: int
    width: int
    objects: tuple[DrawnObject, ...] = ()


def object_pixels(obj: DrawnObject, height: int, width: int) -> np.ndarray:
    """`bool [H, W]` pixels the object paints (before later objects cover it)."""
    x0, y0, x1, y1 = obj.box
    mask = np.zeros((height, width), bool)
    if obj.category_id == SQUARE:
        mask[y0:y1, x0:x1] = True
        return mask
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0


def render(image: DrawnImage) -> tuple[np.ndarray, list[np.ndarray]]:
    """`uint8 [H, W, 3]` pixels and each object's VISIBLE mask (later objects paint over)."""
    pixels = np.empty((image.height, image.width, 3), np.uint8)
    pixels[:] = BACKGROUND
    painted = [object_pixels(o, image.height, image.width) for o in image.objects]
    for obj, mask in zip(image.objects, painted):
        pixels[mask] = obj.colour
    visible = [mask & ~np.any(painted[k + 1:], axis=0) if k + 1 < len(painted) else mask
               for k, mask in enumerate(painted)]
    return pixels, visible


def write_drawn_dataset(root: Path, images: list[DrawnImage]) -> CocoDataset:
    """Write `root/images/*.png` and `root/annotations/instances.json`; load it back."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        pixels, visible = render(image)
        Image.fromarray(pixels).save(root / "images" / image.file_name)
        records.append({"id": image_id, "file_name": image.file_name, "height": image.height,
                        "width": image.width})
        for obj, mask in zip(image.objects, visible):
            rows, cols = np.nonzero(mask)
            bbox = [float(cols.min()), float(rows.min()), float(cols.max() + 1 - cols.min()),
                    float(rows.max() + 1 - rows.min())]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj.category_id,
                                "bbox": bbox, "area": float(mask.sum()), "iscrowd": obj.iscrowd,
                                "segmentation": encode_mask(mask)})
    path = write_coco({"images": records, "annotations": annotations, "categories": CATEGORIES},
                      root / "annotations" / "instances.json")
    return load_coco(path)


def random_drawn_images(count: int, seed: int, height: int = 72, width: int = 96) -> list[DrawnImage]:
    """`count` images of 1-5 random, possibly overlapping objects with distinct colours."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        objects: list[DrawnObject] = []
        for _ in range(int(rng.integers(1, 6))):
            w, h = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            candidate = objects + [DrawnObject(int(rng.choice([SQUARE, DISC])), (x0, y0, x0 + w, y0 + h),
                                               PALETTE[len(objects)])]
            # Keep the new object only if it leaves every object at least half visible.
            _, visible = render(DrawnImage("", height, width, tuple(candidate)))
            painted = [object_pixels(o, height, width).sum() for o in candidate]
            if all(v.sum() >= 0.5 * p for v, p in zip(visible, painted)):
                objects = candidate
        images.append(DrawnImage(f"random_{i:03d}.png", height, width, tuple(objects)))
    return images
