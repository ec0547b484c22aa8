"""Pascal VOC XML -> COCO instances dict.

VOC boxes are `<bndbox>` `xmin ymin xmax ymax` in 1-based pixel indices, both ends
inclusive: a box covering pixel columns 1..10 has xmin=1, xmax=10. In COCO's 0-based
continuous frame that box spans x = 0..10, so `x = xmin - 1` and `w = xmax - xmin + 1`.
`<difficult>1` objects are kept (iscrowd=0); `<truncated>` and `<pose>` are ignored.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from detseg.data.convert.coco_payload import CocoPayloadBuilder, categories_from_names
from detseg.data.convert.image_files import as_file_name, images_by_stem, read_image_size
from detseg.data.errors import DatasetError
from detseg.data.repairs import CLIP_BOXES, DROP_INVALID, Repairs


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as written (1-based, inclusive)
    difficult: bool


@dataclass(frozen=True)
class VocDocument:
    path: Path
    filename: str
    size: tuple[int, int] | None  # (width, height); None when absent or zero in the XML
    objects: tuple[VocObject, ...]


def voc_to_coco(xml_dir: str | os.PathLike, image_dir: str | os.PathLike,
                class_names: Sequence[str] | None = None, repairs: Repairs | None = None) -> dict[str, Any]:
    """Convert every `*.xml` in `xml_dir` (one per image) into a COCO instances dict.

    `class_names` fixes the categories (ids 1..C in that order); an object whose name is
    not in it is an error. None: the sorted names found in the files, ids 1..C.
    The image is `<filename>` under `image_dir`, else the image with that stem.
    Raises `DatasetError` naming the XML file and element.

    A box reaching outside its image is clipped only if `repairs.clip_boxes`; a box with
    no area inside it (entirely outside, or xmax < xmin) is dropped only if
    `repairs.drop_invalid`; otherwise `RepairsNeeded` lists them all (default: strict).
    What was changed is noted in `repairs`.
    """
    repairs = Repairs() if repairs is None else repairs
    xml_dir, image_dir = Path(xml_dir), Path(image_dir)
    if not xml_dir.is_dir():
        raise DatasetError(f"{xml_dir}: VOC annotation folder not found")
    documents = [parse_voc_xml(p) for p in sorted(xml_dir.glob("*.xml"))]
    if not documents:
        raise DatasetError(f"{xml_dir}: no .xml files")
    if class_names is None:
        class_names = sorted({o.name for d in documents for o in d.objects})
    categories = categories_from_names(class_names, "class names")
    id_of_name = {c["name"]: c["id"] for c in categories}
    builder = CocoPayloadBuilder(categories, f"converted from Pascal VOC XML in {xml_dir} by detseg")
    stems = images_by_stem(image_dir)
    for document in documents:
        relative = _find_image(document, image_dir, stems)
        width, height = _image_size(document, image_dir / relative)
        image_id = builder.add_image(as_file_name(relative), width, height, str(document.path))
        for k, obj in enumerate(document.objects):
            if obj.name not in id_of_name:
                raise DatasetError(f"{document.path}: <object> #{k + 1} <name>{obj.name}</name> is not "
                                   f"one of the classes {list(id_of_name)}")
            where = f"{document.path} <object> #{k + 1} ({obj.name}) <bndbox> {_as_written(obj.box)}"
            bbox = _voc_box_to_coco(obj.box, width, height, where, repairs)
            if bbox is not None:
                builder.add_annotation(image_id, id_of_name[obj.name], bbox, bbox[2] * bbox[3])
    repairs.check()
    return builder.to_dict()


def parse_voc_xml(path: Path) -> VocDocument:
    """Read one VOC annotation file; errors name the file and the element at fault."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as e:
        line, column = e.position
        raise DatasetError(f"{path}: invalid XML at line {line} column {column}") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = _text(root, "filename", path, "<annotation>")
    objects = tuple(_parse_object(element, k, path) for k, element in enumerate(root.findall("object")))
    return VocDocument(path, filename, _parse_size(root, path), objects)


def _parse_size(root: ElementTree.Element, path: Path) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None:
        return None
    width = _number(size, "width", path, "<size>")
    height = _number(size, "height", path, "<size>")
    if width <= 0 or height <= 0:  # some tools write 0 when they did not know: read the image
        return None
    return int(width), int(height)


def _parse_object(element: ElementTree.Element, k: int, path: Path) -> VocObject:
    where = f"<object> #{k + 1}"
    name = _text(element, "name", path, where)
    where = f"{where} ({name})"
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise DatasetError(f"{path}: {where}: <bndbox> missing")
    box = tuple(_number(bndbox, tag, path, f"{where} <bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax"))
    difficult = element.find("difficult")
    return VocObject(name, box, difficult is not None and (difficult.text or "0").strip() == "1")


def _text(parent: ElementTree.Element, tag: str, path: Path, where: str) -> str:
    child = parent.find(tag)
    if child is None or not (child.text or "").strip():
        raise DatasetError(f"{path}: {where}: <{tag}> missing or empty")
    return child.text.strip()


def _number(parent: ElementTree.Element, tag: str, path: Path, where: str) -> float:
    text = _text(parent, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}: {where}: <{tag}> is not a number: {text!r}")
    return value


def _find_image(document: VocDocument, image_dir: Path, stems: dict[str, list[Path]]) -> Path:
    """`<filename>` under `image_dir`, else the one image with its stem (some files omit the extension)."""
    if (image_dir / document.filename).is_file():
        return Path(document.filename)
    candidates = stems.get(Path(document.filename).stem, [])
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise DatasetError(f"{document.path}: <filename>{document.filename}</filename> is ambiguous: "
                           f"{[str(c) for c in candidates]} in {image_dir}")
    raise DatasetError(f"{document.path}: <filename>{document.filename}</filename> not found in {image_dir}")


def _image_size(document: VocDocument, image_path: Path) -> tuple[int, int]:
    actual = read_image_size(image_path)
    if document.size is not None and document.size != actual:
        raise DatasetError(f"{document.path}: <size> says {document.size[0]}x{document.size[1]} but "
                           f"{image_path} is {actual[0]}x{actual[1]}")
    return actual


def _as_written(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _voc_box_to_coco(box: tuple[float, float, float, float], width: int, height: int, where: str,
                     repairs: Repairs) -> tuple[float, float, float, float] | None:
    """1-based inclusive `xmin ymin xmax ymax` -> 0-based COCO `[x, y, w, h]`.

    None (noted as `DROP_INVALID`) when xmax < xmin, ymax < ymin or no part of the box
    lies inside the image; clipped (noted as `CLIP_BOXES`) when a part lies outside.
    """
    x0, y0, x1, y1 = box[0] - 1.0, box[1] - 1.0, box[2], box[3]
    if x1 <= x0 or y1 <= y0:
        repairs.note(DROP_INVALID, f"{where}: xmax < xmin or ymax < ymin")
        return None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        repairs.note(DROP_INVALID, f"{where}: outside the {width}x{height} image")
        return None
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        repairs.note(CLIP_BOXES, f"{where}: beyond the {width}x{height} image")
    return (cx0, cy0, cx1 - cx0, cy1 - cy0)
