"""COCO instances datasets as typed records.

COCO JSON is detseg's canonical on-disk format; every other format converts to it.
Boxes in COCO files are `[x, y, width, height]` in pixels; inside detseg boxes are
`xyxy` absolute pixels, converted here at the edge (`Annotation.box_xyxy`).

COCO category ids are arbitrary integers. `LabelMap` maps them to contiguous class
indices `0..C-1` (sorted by COCO id) and back; the map travels with trained models.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as coco_mask

from detseg.core.atomic_files import write_json_atomic
from detseg.data.errors import DatasetError

REQUIRED_TOP_LEVEL_KEYS = ("images", "annotations", "categories")

Segmentation = list | dict | None  # polygons [[x0, y0, x1, y1, ...], ...] or RLE {size, counts}


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str = ""


@dataclass(frozen=True)
class Annotation:
    """One object. `bbox` is COCO `[x, y, w, h]` in pixels of its image."""

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: int = 0
    segmentation: Segmentation = None

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The instance mask, `uint8 [height, width]` of 0/1; the filled box if no segmentation."""
        if not self.segmentation:
            out = np.zeros((height, width), np.uint8)
            x0, y0, x1, y1 = self.box_xyxy
            out[int(math.floor(y0)):int(math.ceil(y1)), int(math.floor(x0)):int(math.ceil(x1))] = 1
            return out
        return decode_segmentation(self.segmentation, height, width)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its annotations. `file_name` is relative to the dataset's image dir."""

    id: int
    file_name: str
    width: int
    height: int
    annotations: tuple[Annotation, ...] = ()

    def boxes_xyxy(self) -> np.ndarray:
        """`float32 [N, 4]` xyxy pixel boxes of this image's annotations."""
        return np.array([a.box_xyxy for a in self.annotations], np.float32).reshape(-1, 4)


@dataclass(frozen=True)
class LabelMap:
    """Contiguous class index `0..C-1` <-> COCO category id and name."""

    coco_ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_categories(cls, categories: Iterable[Category]) -> "LabelMap":
        ordered = sorted(categories, key=lambda c: c.id)
        return cls(tuple(c.id for c in ordered), tuple(c.name for c in ordered))

    @property
    def num_classes(self) -> int:
        return len(self.coco_ids)

    def index_of(self, coco_id: int) -> int:
        try:
            return self.coco_ids.index(int(coco_id))
        except ValueError:
            raise DatasetError(f"category id {coco_id} is not in the label map {list(self.coco_ids)}") from None

    def coco_id(self, index: int) -> int:
        return self.coco_ids[int(index)]

    def name(self, index: int) -> str:
        return self.names[int(index)]

    def to_dict(self) -> dict[str, Any]:
        return {"classes": [{"index": i, "coco_id": c, "name": n}
                            for i, (c, n) in enumerate(zip(self.coco_ids, self.names))]}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "LabelMap":
        classes = sorted(payload["classes"], key=lambda c: c["index"])
        return cls(tuple(int(c["coco_id"]) for c in classes), tuple(str(c["name"]) for c in classes))


@dataclass
class CocoDataset:
    """A loaded COCO instances file: images (with their annotations) and categories."""

    images: list[ImageRecord]
    categories: list[Category]
    image_dir: Path
    source: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label_map(self) -> LabelMap:
        return LabelMap.from_categories(self.categories)

    def image_path(self, record: ImageRecord) -> Path:
        return self.image_dir / record.file_name

    @property
    def annotations(self) -> list[Annotation]:
        return [a for image in self.images for a in image.annotations]

    def subset(self, image_ids: Sequence[int]) -> "CocoDataset":
        """The same dataset restricted to `image_ids` (in that order)."""
        by_id = {image.id: image for image in self.images}
        return CocoDataset([by_id[i] for i in image_ids], list(self.categories), self.image_dir,
                           self.source, dict(self.info))

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": dict(self.info),
            "images": [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
                       for i in self.images],
            "annotations": [annotation_to_dict(a) for a in self.annotations],
            "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                           for c in self.categories],
        }


def annotation_to_dict(annotation: Annotation) -> dict[str, Any]:
    out = {"id": annotation.id, "image_id": annotation.image_id,
           "category_id": annotation.category_id, "bbox": [float(v) for v in annotation.bbox],
           "area": float(annotation.area), "iscrowd": int(annotation.iscrowd)}
    if annotation.segmentation is not None:
        out["segmentation"] = annotation.segmentation
    return out


def decode_segmentation(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed RLE or compressed RLE -> `uint8 [height, width]` 0/1 mask."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise DatasetError(f"segmentation must be polygons or RLE, got {type(segmentation).__name__}")
    return coco_mask.decode(rle).astype(np.uint8)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """`[H, W]` 0/1 mask -> compressed RLE with a JSON-ready string `counts`."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (a UTF-8 byte-order mark is skipped); errors name the file and the
    line/column at fault."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a JSON file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None


def default_image_dir(annotations_path: Path) -> Path:
    """`DIR/annotations/x.json` -> `DIR/images`; else `images/` beside the file; else its folder."""
    for candidate in (annotations_path.parent.parent / "images", annotations_path.parent / "images"):
        if candidate.is_dir():
            return candidate
    return annotations_path.parent


def load_coco(path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> CocoDataset:
    """Load a COCO instances JSON into records.

    Raises `DatasetError` naming the file and the first structural fault;
    `data.validate.validate_coco` lists every fault instead.
    """
    path = Path(path)
    payload = read_json(path)
    return dataset_from_dict(payload, Path(image_dir) if image_dir else default_image_dir(path), path)


def dataset_from_dict(payload: Any, image_dir: Path, source: Path | None = None) -> CocoDataset:
    where = str(source) if source else "COCO dict"
    if not isinstance(payload, dict):
        raise DatasetError(f"{where}: top level must be a JSON object")
    missing = [k for k in REQUIRED_TOP_LEVEL_KEYS if k not in payload]
    if missing:
        raise DatasetError(f"{where}: missing top-level key(s) {missing}")
    try:
        categories = [Category(int(c["id"]), str(c["name"]), str(c.get("supercategory", "")))
                      for c in payload["categories"]]
        by_image: dict[int, list[Annotation]] = {}
        for a in payload["annotations"]:
            ann = Annotation(int(a["id"]), int(a["image_id"]), int(a["category_id"]),
                             tuple(float(v) for v in a["bbox"]), float(a.get("area", 0.0)),
                             int(a.get("iscrowd", 0)), a.get("segmentation"))
            if len(ann.bbox) != 4:
                raise DatasetError(f"{where}: annotation {ann.id}: bbox must have 4 numbers")
            by_image.setdefault(ann.image_id, []).append(ann)
        images = [ImageRecord(int(i["id"]), str(i["file_name"]), int(i["width"]), int(i["height"]),
                              tuple(by_image.pop(int(i["id"]), [])))
                  for i in payload["images"]]
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{where}: malformed record ({type(e).__name__}: {e}); "
                           f"run `detseg data validate` for a full report") from None
    if by_image:
        raise DatasetError(f"{where}: annotations refer to unknown image id(s) {sorted(by_image)[:10]}")
    known = {c.id for c in categories}
    unknown = sorted({a.category_id for i in images for a in i.annotations} - known)
    if unknown:
        raise DatasetError(f"{where}: annotations refer to unknown category id(s) {unknown}")
    return CocoDataset(images, categories, image_dir, source, dict(payload.get("info") or {}))


def write_coco(dataset: CocoDataset | dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a dataset (or a COCO dict) as COCO JSON, atomically."""
    payload = dataset.to_dict() if isinstance(dataset, CocoDataset) else dataset
    return write_json_atomic(payload, path)
