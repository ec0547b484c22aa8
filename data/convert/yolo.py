"""YOLO txt labels <-> COCO.

A YOLO label folder mirrors the image folder: `images/a/b.jpg` <-> `labels/a/b.txt`.
Each line is one object, coordinates normalized to 0..1 by the image width/height:
- a box: `class cx cy w h` (centre, width, height);
- a polygon (YOLO segment format): `class x1 y1 x2 y2 ... xn yn`, n >= 3.
`class` is a 0-based index into the class list (`classes.txt`, one name per line);
the COCO category id is `class + 1`. An image without a txt file, or with an empty
one, has no objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as coco_mask

from detseg.core.atomic_files import write_text_atomic
from detseg.data.coco import CocoDataset, ImageRecord
from detseg.data.convert.coco_payload import CocoPayloadBuilder, categories_from_names
from detseg.data.convert.image_files import as_file_name, list_images, read_image_size
from detseg.data.errors import DatasetError

CLASSES_FILE = "classes.txt"
BOX_TOKENS = 5  # class cx cy w h
MIN_POLYGON_POINTS = 3
# Normalized coordinates are written with 6 decimals: a rounding slack of 1e-6 is not an error.
COORDINATE_SLACK = 1e-6
DECIMALS = 6  # 1e-6 of a 10,000 px image is 0.01 px: far below the 0.5 px a round trip may lose


def yolo_to_coco(label_dir: str | os.PathLike, image_dir: str | os.PathLike,
                 class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Convert YOLO txt labels (boxes or polygons) into a COCO instances dict.

    Every image under `image_dir` becomes a COCO image (sizes read from file headers).
    `class_names`: index order of the YOLO classes; None reads `label_dir/classes.txt`.
    Polygons keep their points as a COCO polygon, bbox = the polygon's extent, area = its
    rasterized pixel area (as COCO computes it). Boxes are clipped to the image.
    Raises `DatasetError` naming the file and line at fault, and for a label file that
    has no image.
    """
    label_dir, image_dir = Path(label_dir), Path(image_dir)
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: YOLO label folder not found")
    if class_names is None:
        class_names = read_classes_file(label_dir / CLASSES_FILE)
    categories = categories_from_names(class_names, "class names")
    builder = CocoPayloadBuilder(categories, f"converted from YOLO labels in {label_dir} by detseg")
    images = list_images(image_dir)
    _check_no_orphan_labels(label_dir, images)
    for relative in images:
        width, height = read_image_size(image_dir / relative)
        label_path = label_dir / relative.with_suffix(".txt")
        image_id = builder.add_image(as_file_name(relative), width, height, str(label_path))
        if not label_path.is_file():
            continue
        for line_number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                where = f"{label_path}: line {line_number}"
                category_id, bbox, area, polygon = _parse_line(line, where, len(categories), width, height)
                builder.add_annotation(image_id, category_id, bbox, area, polygon)
    return builder.to_dict()


def read_classes_file(path: Path) -> list[str]:
    """One class name per line, blank lines skipped."""
    if not path.is_file():
        raise DatasetError(f"{path}: not found; pass the class names (--classes) or write this file")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_no_orphan_labels(label_dir: Path, images: list[Path]) -> None:
    expected = {relative.with_suffix(".txt") for relative in images}
    for path in sorted(label_dir.rglob("*.txt")):
        relative = path.relative_to(label_dir)
        if relative != Path(CLASSES_FILE) and relative not in expected:
            raise DatasetError(f"{path}: label file has no image with the same name in the image folder")


def _parse_line(line: str, where: str, num_classes: int, width: int,
                height: int) -> tuple[int, list[float], float, list[list[float]] | None]:
    """One label line -> (COCO category id, COCO bbox, area, polygon segmentation or None)."""
    tokens = line.split()
    try:
        class_index = int(tokens[0])
        values = [float(t) for t in tokens[1:]]
    except ValueError:
        raise DatasetError(f"{where}: expected an integer class and numbers, got {line.strip()!r}") from None
    if not 0 <= class_index < num_classes:
        raise DatasetError(f"{where}: class index {class_index} is out of range 0..{num_classes - 1}")
    if any(not -COORDINATE_SLACK <= v <= 1 + COORDINATE_SLACK for v in values):
        raise DatasetError(f"{where}: coordinates must be normalized to 0..1, got {values}")
    if len(tokens) == BOX_TOKENS:
        return (class_index + 1, *_box_from_yolo(values, where, width, height), None)
    if len(values) >= 2 * MIN_POLYGON_POINTS and len(values) % 2 == 0:
        return (class_index + 1, *_polygon_from_yolo(values, width, height))
    raise DatasetError(f"{where}: expected 5 numbers (class cx cy w h) or a class and at least "
                       f"{MIN_POLYGON_POINTS} x y pairs, got {len(tokens)} numbers")


def _box_from_yolo(values: list[float], where: str, width: int, height: int) -> tuple[list[float], float]:
    cx, cy, w, h = values
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: box width and height must be positive, got w={w} h={h}")
    x0, x1 = max((cx - w / 2) * width, 0.0), min((cx + w / 2) * width, float(width))
    y0, y1 = max((cy - h / 2) * height, 0.0), min((cy + h / 2) * height, float(height))
    return [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (y1 - y0)


def _polygon_from_yolo(values: list[float], width: int,
                       height: int) -> tuple[list[float], float, list[list[float]]]:
    points = np.clip(np.array(values, np.float64).reshape(-1, 2), 0.0, 1.0) * (width, height)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    polygon = [float(v) for v in points.reshape(-1)]
    area = float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects([polygon], height, width))))
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], area, [polygon]


def coco_to_yolo(dataset: CocoDataset, out_dir: str | os.PathLike) -> list[Path]:
    """Write one YOLO box txt per image (mirroring `file_name`) plus `classes.txt`.

    Class index = the contiguous index of `dataset.label_map`. Images without objects get
    an empty file. Crowd annotations are skipped; boxes are clipped to the image and
    skipped if nothing is left (YOLO cannot express them). Each file is written through a
    temporary sibling and a rename. Returns the label files written (not `classes.txt`).
    """
    out_dir = Path(out_dir)
    label_map = dataset.label_map
    targets: dict[Path, ImageRecord] = {}
    for record in dataset.images:
        target = out_dir / Path(record.file_name).with_suffix(".txt")
        if target in targets:
            raise DatasetError(f"images {targets[target].file_name!r} and {record.file_name!r} would both "
                               f"write {target}: YOLO pairs labels with images by name")
        targets[target] = record
    written = []
    for target, record in targets.items():
        lines = [_yolo_box_line(label_map.index_of(a.category_id), a.box_xyxy, record)
                 for a in record.annotations if not a.iscrowd]
        write_text_atomic("".join(line for line in lines if line), target)
        written.append(target)
    write_text_atomic("".join(f"{name}\n" for name in label_map.names), out_dir / CLASSES_FILE)
    return written


def _yolo_box_line(class_index: int, box: tuple[float, float, float, float], record: ImageRecord) -> str:
    """One `class cx cy w h` line, or '' if the box has no area inside the image."""
    x0, x1 = np.clip([box[0], box[2]], 0, record.width)
    y0, y1 = np.clip([box[1], box[3]], 0, record.height)
    if x1 <= x0 or y1 <= y0:
        return ""
    numbers = ((x0 + x1) / 2 / record.width, (y0 + y1) / 2 / record.height,
               (x1 - x0) / record.width, (y1 - y0) / record.height)
    return f"{class_index} " + " ".join(f"{v:.{DECIMALS}f}" for v in numbers) + "\n"
