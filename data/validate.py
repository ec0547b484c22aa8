"""Validate a COCO instances file and its images, listing every fault at once.

`data.coco.load_coco` stops at the first fault; `validate_coco` reads the same file
defensively and reports every problem, each naming the record (annotation id and its
image, image file, category) and the field at fault, so a dataset is fixed in one pass.
It never raises for bad input. Boxes here are COCO `[x, y, width, height]` pixels.
Image files are checked to exist, decode completely and have the declared size.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from detseg.data.coco import REQUIRED_TOP_LEVEL_KEYS, default_image_dir
from detseg.data.json_values import describe, is_int, is_number, json_type
from detseg.data.segmentation_checks import segmentation_problem

# Boxes and polygon points may stick out of the image by this much (float rounding).
BOX_TOLERANCE_PX = 1.0
CROWD_FLAGS = (0, 1)
# A progress bar on stderr only when checking the image files takes noticeable time.
PROGRESS_MIN_IMAGES = 200
# `format()` lists this many problems of one kind (field), then counts the rest.
PROBLEMS_SHOWN_PER_KIND = 20


_UNREADABLE = object()


@dataclass(frozen=True)
class Problem:
    """One fault: `where` names the record or file, `field` the part of it at fault."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


@dataclass
class ValidationReport:
    """Every problem found in one COCO file (and its images), plus what it holds.

    The counts are the lengths of the file's sections; `sections_read` is False when
    the file could not be parsed into a JSON object, and the counts then mean nothing.
    """

    source: str
    problems: list[Problem] = dataclass_field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    sections_read: bool = False
    image_dir: str | None = None  # the folder image files were looked for in
    image_dir_guessed: bool = False  # True: found from the annotations' location
    images_checked: bool = False  # False: image files were not opened

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, field_name: str, message: str) -> None:
        self.problems.append(Problem(where, field_name, message))

    def format(self) -> str:
        """One line per problem (the first `PROBLEMS_SHOWN_PER_KIND` of each field, then
        a count of the rest), then a summary line; `OK: ...` alone when clean."""
        contents = (f"{self.num_images} images, {self.num_annotations} annotations, "
                    f"{self.num_categories} categories")
        if self.ok:
            return f"OK: {contents}"
        counts = Counter(p.field for p in self.problems)
        kinds = ", ".join(f"{name}: {n}" for name, n in counts.most_common())
        shown: Counter = Counter()
        lines = []
        for problem in self.problems:
            shown[problem.field] += 1
            if shown[problem.field] <= PROBLEMS_SHOWN_PER_KIND:
                lines.append(str(problem))
        lines += [f"... and {n - PROBLEMS_SHOWN_PER_KIND} more {name} problem(s) not shown"
                  for name, n in counts.items() if n > PROBLEMS_SHOWN_PER_KIND]
        lines.append(f"FAILED: {len(self.problems)} problem(s) in {self.source} ({kinds})"
                     + (f"; {contents}" if self.sections_read else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class _DeclaredImage:
    """An image record as far as it could be read; None where a field is invalid."""

    id: int
    file_name: str | None
    width: int | None
    height: int | None

    @property
    def size_known(self) -> bool:
        return self.width is not None and self.height is not None


def validate_coco(annotations_path: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                  check_images: bool = True) -> ValidationReport:
    """Check a COCO instances JSON (and, if `check_images`, its image files).

    `image_dir` defaults to `data.coco.default_image_dir(annotations_path)`.
    Never raises for bad input: every fault becomes a `Problem` in the report.
    """
    path = Path(annotations_path)
    report = ValidationReport(str(path))
    try:
        _validate_into(report, path, image_dir, check_images)
    except Exception as error:  # a validator bug must not hide the problems found so far
        report.add(str(path), "validator",
                   f"stopped early on an unexpected {type(error).__name__}: {error}")
    return report


def _validate_into(report: ValidationReport, path: Path, image_dir: str | os.PathLike | None,
                   check_images: bool) -> None:
    payload = _read_payload(path, report)
    if payload is _UNREADABLE:
        return
    sections = _top_level_sections(payload, report)
    if sections is None:
        return
    report.sections_read = True
    report.num_images = len(sections["images"] or [])
    report.num_annotations = len(sections["annotations"] or [])
    report.num_categories = len(sections["categories"] or [])
    category_ids = _check_categories(sections["categories"], report)
    images = _check_images(sections["images"], report)
    _check_annotations(sections["annotations"], images, category_ids, report)
    folder = Path(image_dir) if image_dir is not None else default_image_dir(path)
    report.image_dir, report.image_dir_guessed = str(folder), image_dir is None
    if check_images and images:
        report.images_checked = _check_image_files(list(images.values()), folder, report)


def _read_payload(path: Path, report: ValidationReport) -> Any:
    """The parsed JSON, or `_UNREADABLE` after reporting why it could not be read."""
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        report.add(where, "file", "not found")
    except OSError as e:  # a folder, no permission, an I/O error
        report.add(where, "file", f"cannot be read ({e.strerror or e})")
    except UnicodeDecodeError as e:
        report.add(where, "json", f"not UTF-8 text (bad byte at offset {e.start})")
    except json.JSONDecodeError as e:
        report.add(where, "json", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except RecursionError:
        report.add(where, "json", "nested too deeply to parse")
    except ValueError as e:  # e.g. an integer literal too long for Python to convert
        report.add(where, "json", f"cannot be parsed: {e}")
    return _UNREADABLE


def _top_level_sections(payload: Any, report: ValidationReport) -> dict[str, list | None] | None:
    """`images`, `annotations`, `categories` lists; None for each one missing or not a list."""
    if not isinstance(payload, dict):
        report.add(report.source, "top level",
                   f"must be a JSON object with keys {list(REQUIRED_TOP_LEVEL_KEYS)}, got {json_type(payload)}")
        return None
    sections: dict[str, list | None] = {}
    for key in REQUIRED_TOP_LEVEL_KEYS:
        value = payload.get(key)
        sections[key] = value if isinstance(value, list) else None
        if key not in payload:
            report.add(report.source, key, "missing top-level key")
        elif not isinstance(value, list):
            report.add(report.source, key, f"must be an array, got {json_type(value)}")
    return sections


def _check_categories(records: list | None, report: ValidationReport) -> set[int] | None:
    """Category ids declared (None when the section itself is unusable)."""
    if records is None:
        return None
    first_index: dict[int, int] = {}
    for index, record in enumerate(records):
        where = f"categories[{index}]"
        if not _is_object(record, where, report):
            continue
        category_id = _required_int(record, "id", where, report)
        if category_id is not None:
            where = f"category {category_id}"
            _note_duplicate(first_index, category_id, index, "categories", where, "id", report)
        if "name" not in record:
            report.add(where, "name", "missing required field")
        elif not isinstance(record["name"], str) or not record["name"].strip():
            report.add(where, "name", f"must be a non-empty string, got {describe(record['name'])}")
    return set(first_index)


def _check_images(records: list | None, report: ValidationReport) -> dict[int, _DeclaredImage] | None:
    """Image records by id (first of duplicates); None when the section is unusable."""
    if records is None:
        return None
    images: dict[int, _DeclaredImage] = {}
    first_index: dict[int, int] = {}
    first_by_name: dict[str, int] = {}
    for index, record in enumerate(records):
        where = f"images[{index}]"
        if not _is_object(record, where, report):
            continue
        file_name = record.get("file_name")
        file_name = file_name if isinstance(file_name, str) and file_name.strip() else None
        image_id = _required_int(record, "id", where, report)
        if image_id is not None:
            where = f"image {image_id}" + (f" '{file_name}'" if file_name else "")
            _note_duplicate(first_index, image_id, index, "images", where, "id", report)
        if "file_name" not in record:
            report.add(where, "file_name", "missing required field")
        elif file_name is None:
            report.add(where, "file_name", f"must be a non-empty string, got {describe(record['file_name'])}")
        else:
            _note_duplicate(first_by_name, file_name, index, "images", where, "file_name", report)
        width = _required_int(record, "width", where, report, positive=True)
        height = _required_int(record, "height", where, report, positive=True)
        if image_id is not None and image_id not in images:
            images[image_id] = _DeclaredImage(image_id, file_name, width, height)
    return images


def _check_annotations(records: list | None, images: dict[int, _DeclaredImage] | None,
                       category_ids: set[int] | None, report: ValidationReport) -> None:
    """Every annotation's fields, and its references to images and categories."""
    first_index: dict[int, int] = {}
    for index, record in enumerate(records or []):
        if not _is_object(record, f"annotations[{index}]", report):
            continue
        image = images.get(record.get("image_id")) if images and is_int(record.get("image_id")) else None
        where = _annotation_where(index, record, image)
        annotation_id = _required_int(record, "id", where, report)
        if annotation_id is not None:
            _note_duplicate(first_index, annotation_id, index, "annotations", where, "id", report)
        image_id = _required_int(record, "image_id", where, report)
        if image_id is not None and images is not None and image_id not in images:
            report.add(where, "image_id", f"image {image_id} is not in images")
        category_id = _required_int(record, "category_id", where, report)
        if category_id is not None and category_ids is not None and category_id not in category_ids:
            report.add(where, "category_id", f"category {category_id} is not in categories")
        height, width = (image.height, image.width) if image else (None, None)
        for field_name, problem in (("bbox", _bbox_problem(record, image)), ("area", _area_problem(record)),
                                    ("iscrowd", _crowd_problem(record)),
                                    ("segmentation", segmentation_problem(record.get("segmentation"), height, width))):
            if problem:
                report.add(where, field_name, problem)


def _annotation_where(index: int, record: dict, image: _DeclaredImage | None) -> str:
    """`annotation 17 (image 3 'img_0003.png')`, as much of it as the record allows."""
    annotation_id = record.get("id")
    where = f"annotation {annotation_id}" if is_int(annotation_id) else f"annotations[{index}]"
    image_id = record.get("image_id")
    if image is not None and image.file_name:
        where += f" (image {image_id} '{image.file_name}')"
    elif is_int(image_id):
        where += f" (image {image_id})"
    return where


def _bbox_problem(record: dict, image: _DeclaredImage | None) -> str | None:
    if "bbox" not in record:
        return "missing required field"
    bbox = record["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        return f"must be 4 numbers [x, y, width, height], got {describe(bbox)}"
    if not all(math.isfinite(v) for v in bbox):
        return f"contains NaN or infinity: {bbox}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"width and height must be positive, got width {w} height {h}"
    if image is not None and image.size_known and not (
            x >= -BOX_TOLERANCE_PX and y >= -BOX_TOLERANCE_PX
            and x + w <= image.width + BOX_TOLERANCE_PX and y + h <= image.height + BOX_TOLERANCE_PX):
        return (f"box xyxy [{x:g}, {y:g}, {x + w:g}, {y + h:g}] lies outside the "
                f"{image.width}x{image.height} image (tolerance {BOX_TOLERANCE_PX:g} px)")
    return None


def _area_problem(record: dict) -> str | None:
    """`area` is optional (loaders default it); when present it must be a sane number."""
    area = record.get("area", 0)
    if not is_number(area):
        return f"must be a number, got {describe(area)}"
    if not math.isfinite(area):
        return f"is NaN or infinity ({area})"
    return f"must not be negative, got {area}" if area < 0 else None


def _crowd_problem(record: dict) -> str | None:
    crowd = record.get("iscrowd", 0)
    return None if is_int(crowd) and crowd in CROWD_FLAGS else f"must be 0 or 1, got {describe(crowd)}"


def _check_image_files(images: list[_DeclaredImage], image_dir: Path, report: ValidationReport) -> bool:
    """Each named image file exists, decodes completely and has its declared size.

    False when the folder is missing (reported) and nothing could be checked.
    """
    if not image_dir.is_dir():
        report.add(str(image_dir), "images", "image folder not found (pass the folder with --images)")
        return False
    named = [image for image in images if image.file_name]
    progress = tqdm(named, desc="checking images", unit="img", file=sys.stderr,
                    disable=len(named) <= PROGRESS_MIN_IMAGES, leave=False)
    for image in progress:
        path = image_dir / image.file_name
        problem = _image_file_problem(path, image)
        if problem:
            report.add(str(path), *problem)
    return True


def _image_file_problem(path: Path, image: _DeclaredImage) -> tuple[str, str] | None:
    """(field, message) for a missing, corrupt or wrongly sized image file, else None."""
    if not path.is_file():
        return ("file", "not found" if not path.exists() else "not a regular file")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if opened.format == "JPEG":
                # Decode at 1/8 scale: every byte is still read (truncation still fails),
                # but the inverse DCT is far cheaper.
                opened.draft(opened.mode, (max(1, width // 8), max(1, height // 8)))
            opened.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        return ("file", f"cannot be decoded as an image ({type(e).__name__}: {e})")
    if image.size_known and (width, height) != (image.width, image.height):
        return ("size", f"real size {width}x{height} differs from the declared "
                        f"{image.width}x{image.height} (width x height)")
    return None


def _required_int(record: dict, key: str, where: str, report: ValidationReport,
                  positive: bool = False) -> int | None:
    """`record[key]` when it is an integer (positive if asked); else report it and None."""
    if key not in record:
        report.add(where, key, "missing required field")
        return None
    value = record[key]
    if not is_int(value):
        report.add(where, key, f"must be an integer, got {describe(value)}")
        return None
    if positive and value <= 0:
        report.add(where, key, f"must be positive, got {value}")
        return None
    return value


def _note_duplicate(first_index: dict, key: Any, index: int, section: str, where: str,
                    field_name: str, report: ValidationReport) -> None:
    if key in first_index:
        report.add(where, field_name, f"duplicate {field_name} {key!r} (first used by {section}[{first_index[key]}])")
    else:
        first_index[key] = index


def _is_object(record: Any, where: str, report: ValidationReport) -> bool:
    if isinstance(record, dict):
        return True
    report.add(where, "record", f"must be a JSON object, got {describe(record)}")
    return False
