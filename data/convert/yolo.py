"""YOLO txt labels <-> COCO.

A YOLO label folder mirrors the image folder: `images/a/b.jpg` <-> `labels/a/b.txt`.
Each line is one object, coordinates normalized to 0..1 by the image width/height:
- a box: `class cx cy w h` (centre, width, height);
- a polygon (YOLO segment format): `class x1 y1 x2 y2 ... xn yn`, n >= 3.
`class` is a 0-based index into the class list (`classes.txt`, one name per line);
the COCO category id is `class + 1`. An empty txt file is an image without objects;
an image without a txt file is added (without objects) only on request (`include_unlabeled`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as coco_mask

from detseg.data.coco import CocoDataset, ImageRecord, LabelMap
from detseg.data.convert.coco_payload import CocoPayloadBuilder, categories_from_names
from detseg.data.convert.image_files import as_file_name, list_images, read_image_size
from detseg.data.errors import DatasetError
from detseg.data.output_paths import check_output_folder, write_folder_atomic
from detseg.data.repairs import (CLIP_BOXES, CROWDS_NOT_WRITTEN, DROP_INVALID, INCLUDE_UNLABELED,
                                  SEGMENTATIONS_NOT_WRITTEN, Repairs)

CLASSES_FILE = "classes.txt"
BOX_TOKENS = 5  # class cx cy w h
MIN_POLYGON_POINTS = 3
# Normalized coordinates are written with 6 decimals: a rounding slack of 1e-6 is not an error.
COORDINATE_SLACK = 1e-6
DECIMALS = 6  # 1e-6 of a 10,000 px image is 0.01 px: far below the 0.5 px a round trip may lose
# A COCO box this far past the image's edge is float noise from other tools, clipped silently.
BOX_SLACK_PX = 0.01


def yolo_to_coco(label_dir: str | os.PathLike, image_dir: str | os.PathLike,
                 class_names: Sequence[str] | None = None, repairs: Repairs | None = None) -> dict[str, Any]:
    """Convert YOLO txt labels (boxes or polygons) into a COCO instances dict.

    Every image under `image_dir` with a label file becomes a COCO image (sizes read
    from file headers); an empty label file is an image without objects.
    `class_names`: index order of the YOLO classes; None reads `label_dir/classes.txt`.
    Polygons keep their points as a COCO polygon, bbox = the polygon's extent, area = its
    rasterized pixel area (as COCO computes it).
    Raises `DatasetError` naming the file and line at fault, and for a label file that
    has no image.

    Changes are made only when `repairs` allows them, else `RepairsNeeded` lists them
    (default: strict): images without a label file are added without objects
    (`include_unlabeled`); boxes reaching outside the image are clipped (`clip_boxes`);
    boxes of zero or negative width or height are dropped (`drop_invalid`).
    """
    repairs = Repairs() if repairs is None else repairs
    label_dir, image_dir = Path(label_dir), Path(image_dir)
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: YOLO label folder not found")
    if class_names is None:
        class_names = read_classes_file(label_dir / CLASSES_FILE)
    if not class_names:
        raise DatasetError("class names: none given; YOLO class indices 0, 1, ... need one name each")
    categories = categories_from_names(class_names, "class names")
    builder = CocoPayloadBuilder(categories, f"converted from YOLO labels in {label_dir} by detseg")
    images = list_images(image_dir)
    _check_no_orphan_labels(label_dir, images)
    for relative in images:
        width, height = read_image_size(image_dir / relative)
        label_path = label_dir / relative.with_suffix(".txt")
        if not label_path.is_file():
            repairs.note(INCLUDE_UNLABELED, str(image_dir / relative))
            if not repairs.include_unlabeled:
                continue
        image_id = builder.add_image(as_file_name(relative), width, height, str(label_path))
        for line_number, line in enumerate(_read_lines(label_path), 1):
            if line.strip():
                where = f"{label_path}: line {line_number}"
                parsed = _parse_line(line, where, len(categories), width, height, repairs)
                if parsed is not None:
                    builder.add_annotation(image_id, *parsed)
    repairs.check()
    return builder.to_dict()


def _read_lines(path: Path) -> list[str]:
    """The lines of a label file (a UTF-8 byte-order mark is skipped); [] if there is none."""
    if not path.is_file():
        return []
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None


def read_classes_file(path: Path) -> list[str]:
    """One class name per line, blank lines skipped."""
    if not path.is_file():
        raise DatasetError(f"{path}: not found; pass the class names (--classes) or write this file")
    names = [line.strip() for line in _read_lines(path) if line.strip()]
    if not names:
        raise DatasetError(f"{path}: holds no class names (one per line expected)")
    return names


def _check_no_orphan_labels(label_dir: Path, images: list[Path]) -> None:
    expected = {relative.with_suffix(".txt") for relative in images}
    for path in sorted(label_dir.rglob("*.txt")):
        relative = path.relative_to(label_dir)
        if relative != Path(CLASSES_FILE) and relative not in expected:
            raise DatasetError(f"{path}: label file has no image with the same name in the image folder")


def _parse_line(line: str, where: str, num_classes: int, width: int, height: int,
                repairs: Repairs) -> tuple[int, list[float], float, list[list[float]] | None] | None:
    """One label line -> (COCO category id, COCO bbox, area, polygon segmentation or None).

    None for a box without area (noted in `repairs` as `DROP_INVALID`).
    """
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
        box = _box_from_yolo(values, where, width, height, repairs)
        return None if box is None else (class_index + 1, *box, None)
    if len(values) >= 2 * MIN_POLYGON_POINTS and len(values) % 2 == 0:
        return (class_index + 1, *_polygon_from_yolo(values, width, height))
    raise DatasetError(f"{where}: expected 5 numbers (class cx cy w h) or a class and at least "
                       f"{MIN_POLYGON_POINTS} x y pairs, got {len(tokens)} numbers")


def _box_from_yolo(values: list[float], where: str, width: int, height: int,
                   repairs: Repairs) -> tuple[list[float], float] | None:
    """Normalized `cx cy w h` -> (COCO bbox in pixels, area); clipped to the image, which is
    noted as `CLIP_BOXES` when it moves an edge by more than the rounding slack."""
    cx, cy, w, h = values
    if w <= 0 or h <= 0:
        repairs.note(DROP_INVALID, f"{where}: width {w:g} and height {h:g} must be positive")
        return None
    edges = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    clipped = np.clip(edges, 0.0, 1.0)
    if np.abs(edges - clipped).max() > COORDINATE_SLACK:
        repairs.note(CLIP_BOXES, f"{where}: x {edges[0]:.4g}..{edges[2]:.4g}, y {edges[1]:.4g}..{edges[3]:.4g} "
                                 f"of the image's 0..1")
    x0, y0, x1, y1 = (clipped * (width, height, width, height)).tolist()
    return [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (y1 - y0)


def _polygon_from_yolo(values: list[float], width: int,
                       height: int) -> tuple[list[float], float, list[list[float]]]:
    points = np.clip(np.array(values, np.float64).reshape(-1, 2), 0.0, 1.0) * (width, height)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    polygon = [float(v) for v in points.reshape(-1)]
    area = float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects([polygon], height, width))))
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], area, [polygon]


def coco_to_yolo(dataset: CocoDataset, out_dir: str | os.PathLike, repairs: Repairs | None = None,
                 overwrite: bool = False) -> list[Path]:
    """Write one YOLO box txt per image (mirroring `file_name`) plus `classes.txt` into `out_dir`.

    Class index = the contiguous index of `dataset.label_map`. Images without objects get
    an empty file. `out_dir` must be empty or absent unless `overwrite`, which replaces
    it whole (no old label file stays beside the new ones); it may not hold the dataset's
    images or annotations file. The folder is written beside `out_dir`, then renamed into
    place: a failure leaves the previous folder as it was.

    YOLO box labels cannot hold segmentations or crowd regions: those are noted in
    `repairs` (boxes of segmented objects are written, crowd annotations are not). A box
    reaching outside its image is clipped only if `repairs.clip_boxes`, one without area
    inside it dropped only if `repairs.drop_invalid`; else `RepairsNeeded` (nothing is
    written). Returns the label files written (not `classes.txt`).
    """
    repairs = Repairs() if repairs is None else repairs
    out_dir = check_output_folder(out_dir, overwrite, [p for p in (dataset.image_dir, dataset.source) if p])
    label_map = dataset.label_map
    label_files: dict[Path, ImageRecord] = {}
    for record in dataset.images:
        relative = Path(record.file_name).with_suffix(".txt")
        if relative in label_files:
            raise DatasetError(f"images {label_files[relative].file_name!r} and {record.file_name!r} would "
                               f"both write {out_dir / relative}: YOLO pairs labels with images by name")
        label_files[relative] = record
    texts = {relative: "".join(_yolo_lines(record, label_map, repairs))
             for relative, record in label_files.items()}
    repairs.check()

    def write(staging: Path) -> None:
        for relative, text in texts.items():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_text(text, encoding="utf-8")
        (staging / CLASSES_FILE).write_text("".join(f"{name}\n" for name in label_map.names), encoding="utf-8")

    write_folder_atomic(out_dir, write, overwrite)
    return [out_dir / relative for relative in label_files]


def _yolo_lines(record: ImageRecord, label_map: LabelMap, repairs: Repairs) -> list[str]:
    """The `class cx cy w h` lines of one image's objects (crowds and boxes without area left out)."""
    lines = []
    for annotation in record.annotations:
        where = f"annotation id {annotation.id} of {record.file_name}"
        if annotation.iscrowd:
            repairs.note(CROWDS_NOT_WRITTEN, where)
            continue
        if annotation.segmentation:
            repairs.note(SEGMENTATIONS_NOT_WRITTEN, where)
        line = _yolo_box_line(label_map.index_of(annotation.category_id), annotation.bbox, record,
                              f"{where} bbox {[round(v, 2) for v in annotation.bbox]}", repairs)
        if line:
            lines.append(line)
    return lines


def _yolo_box_line(class_index: int, bbox: tuple[float, float, float, float], record: ImageRecord,
                   where: str, repairs: Repairs) -> str:
    """One `class cx cy w h` line for a COCO `[x, y, w, h]` box, or '' for a box without
    area inside the image (noted as `DROP_INVALID`); clipping is noted as `CLIP_BOXES`."""
    x, y, w, h = bbox
    if not (w > 0 and h > 0):
        repairs.note(DROP_INVALID, f"{where}: width and height must be positive")
        return ""
    edges = np.array([x, y, x + w, y + h])
    clipped = np.clip(edges, 0, [record.width, record.height, record.width, record.height])
    x0, y0, x1, y1 = clipped.tolist()
    if x1 <= x0 or y1 <= y0:
        repairs.note(DROP_INVALID, f"{where}: outside the {record.width}x{record.height} image")
        return ""
    if np.abs(edges - clipped).max() > BOX_SLACK_PX:
        repairs.note(CLIP_BOXES, f"{where}: beyond the {record.width}x{record.height} image")
    numbers = ((x0 + x1) / 2 / record.width, (y0 + y1) / 2 / record.height,
               (x1 - x0) / record.width, (y1 - y0) / record.height)
    return f"{class_index} " + " ".join(f"{v:.{DECIMALS}f}" for v in numbers) + "\n"
