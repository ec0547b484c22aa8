"""Mask PNGs -> COCO instances dict with RLE segmentations.

One single-channel PNG per image, same relative path and stem (`images/a/b.jpg` <->
`masks/a/b.png`), same width and height as the image. Two encodings:

- `semantic`: pixel value = COCO category id (1..254); 0 = background, 255 = ignore
  (skipped). Every 8-connected component of one class becomes one instance.
- `instance`: pixel value = `category_id * 1000 + instance_index` (so a 16-bit PNG);
  0 = background. All pixels with one value form one instance, connected or not
  (an occluded object may be in pieces). E.g. 3001 and 3002 are two objects of
  category 3; values 1..999 (category 0) are an error.
- `labels`: a label map of ONE class (what cell-segmentation tools and the Data Science
  Bowl write): 0 = background, each other value 1..K one object of that class, connected
  or not. The class is named by the caller (`class_names=["nucleus"]`); its id is 1.

The codes are the contract's (`detseg.core.contract`): 0, background in both encodings, is
`SEMANTIC_BACKGROUND`; 255, ignore in semantic PNGs, is `SEMANTIC_IGNORE`.

Each instance: `segmentation` = compressed RLE, `area` = its pixel count, `bbox` = the
tight box around its pixels (pixel columns 4..9 -> x=4, w=6), iscrowd=0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from detseg.core.contract import SEMANTIC_BACKGROUND, SEMANTIC_IGNORE
from detseg.data.coco import encode_mask
from detseg.data.convert.coco_payload import CocoPayloadBuilder, categories_from_names
from detseg.data.convert.image_files import as_file_name, list_images, read_image_size
from detseg.data.errors import DatasetError, OptionError

INSTANCE_CATEGORY_FACTOR = 1000  # instance PNG value = category_id * 1000 + instance_index
LABEL_MAP_CATEGORY_ID = 1  # the one class of a `labels` mask
MASK_KINDS = ("semantic", "instance", "labels")
EIGHT_CONNECTED = np.ones((3, 3), bool)


def masks_to_coco(mask_dir: str | os.PathLike, image_dir: str | os.PathLike, kind: str = "semantic",
                  class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Convert the mask PNG of every image under `image_dir` into COCO instances.

    `class_names[i]` names category id i+1 (ids 1..C); a mask value naming a category
    beyond C is an error. None: the categories found, named `class_<id>`. Kind `labels`
    needs exactly one class name.
    An image without a mask PNG, a mask of another size, or a colour mask is a
    `DatasetError` naming the file.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    if kind == "labels" and (class_names is None or len(class_names) != 1):
        raise OptionError("mask kind 'labels' holds the objects of one class: give its name with "
                          "{classes} (e.g. nucleus)", classes="class_names=[...]")
    mask_dir, image_dir = Path(mask_dir), Path(image_dir)
    if not mask_dir.is_dir():
        raise DatasetError(f"{mask_dir}: mask folder not found")
    # a mask folder inside the image folder holds masks, not images
    inside_masks = mask_dir.resolve()
    images = [r for r in list_images(image_dir) if not (image_dir / r).resolve().is_relative_to(inside_masks)]
    found = [_image_objects(relative, image_dir, mask_dir, kind) for relative in images]
    categories = _categories(class_names, {o[0] for *_, objects in found for o in objects})
    known = {c["id"] for c in categories}
    builder = CocoPayloadBuilder(categories, f"converted from {kind} mask PNGs in {mask_dir} by detseg")
    for relative, width, height, objects in found:
        mask_path = mask_dir / relative.with_suffix(".png")
        image_id = builder.add_image(as_file_name(relative), width, height, str(mask_path))
        for category_id, bbox, area, rle in objects:
            if category_id not in known:
                raise DatasetError(f"{mask_path}: category id {category_id} is beyond the "
                                   f"{len(categories)} class names given")
            builder.add_annotation(image_id, category_id, bbox, area, rle)
    return builder.to_dict()


def _image_objects(relative: Path, image_dir: Path, mask_dir: Path, kind: str) -> tuple:
    """`(relative, width, height, [(category_id, bbox, area, rle), ...])` for one image.

    Masks are encoded right away so that only RLEs, not full masks, stay in memory.
    """
    mask_path = mask_dir / relative.with_suffix(".png")
    width, height = read_image_size(image_dir / relative)
    mask = read_mask(mask_path, width, height)
    instances = {"semantic": semantic_instances, "labels": label_map_instances,
                 "instance": lambda m: instance_instances(m, mask_path)}[kind](mask)
    objects = [(category_id, tight_box(m), int(m.sum()), encode_mask(m)) for category_id, m in instances]
    return relative, width, height, objects


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A single-channel mask PNG as an integer array `[height, width]` (palette PNGs by index)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise DatasetError(f"{path}: mask must be a single-channel PNG (class or instance ids), "
                                   f"got mode {image.mode}")
            mask = np.array(image).astype(np.int64)
    except FileNotFoundError:
        raise DatasetError(f"{path}: mask PNG not found for the image with this stem") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: not a readable PNG ({e})") from None
    if mask.shape != (height, width):
        raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}")
    return mask


def semantic_instances(mask: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """`(category_id, uint8 [H, W] 0/1 mask)` for each 8-connected component of each class.

    Ordered by category id, then by the component's first pixel in raster order.
    """
    for category_id in np.unique(mask):
        if category_id in (SEMANTIC_BACKGROUND, SEMANTIC_IGNORE):
            continue
        components, _ = ndimage.label(mask == category_id, structure=EIGHT_CONNECTED)
        # find_objects gives each component's bounding window: compare only inside it
        for component, window in enumerate(ndimage.find_objects(components), 1):
            instance = np.zeros(mask.shape, np.uint8)
            instance[window] = components[window] == component
            yield int(category_id), instance


def instance_instances(mask: np.ndarray, path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """`(category_id, uint8 [H, W] 0/1 mask)` for each distinct value, in value order."""
    for value in np.unique(mask):
        if value == SEMANTIC_BACKGROUND:
            continue
        category_id = int(value) // INSTANCE_CATEGORY_FACTOR
        if category_id < 1:
            raise DatasetError(f"{path}: instance value {value} has no category: instance PNG values "
                               f"must be category_id * {INSTANCE_CATEGORY_FACTOR} + instance_index "
                               f"(a label map of one class, 1..K for its objects, is mask kind "
                               f"'labels': --mask-kind labels --classes NAME)")
        yield category_id, (mask == value).astype(np.uint8)


def label_map_instances(mask: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """`(1, uint8 [H, W] 0/1 mask)` for each distinct non-zero value of a one-class label map,
    in value order (the pixels of one value form one object, connected or not)."""
    for value, window in enumerate(ndimage.find_objects(mask), 1):
        if window is None:  # this value does not occur
            continue
        instance = np.zeros(mask.shape, np.uint8)
        instance[window] = mask[window] == value
        yield LABEL_MAP_CATEGORY_ID, instance


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """COCO `[x, y, w, h]` of the smallest box holding every set pixel (pixel edges, 0-based)."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(columns[0]), int(rows[0])
    return (float(x0), float(y0), float(columns[-1] + 1 - x0), float(rows[-1] + 1 - y0))


def _categories(class_names: Sequence[str] | None, found_ids: set[int]) -> list[dict[str, Any]]:
    if class_names is not None:
        return categories_from_names(class_names, "class names")
    return [{"id": c, "name": f"class_{c}", "supercategory": ""} for c in sorted(found_ids)]
