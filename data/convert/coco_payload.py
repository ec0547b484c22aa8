"""Assembling a COCO instances dict, shared by the VOC, YOLO and mask converters.

Image ids and annotation ids are assigned 1, 2, 3, ... in the order things are added,
so a conversion of the same files always yields the same ids.
"""

from __future__ import annotations

from typing import Any, Sequence

from detseg.data.errors import DatasetError

BBox = tuple[float, float, float, float]  # COCO [x, y, width, height] in pixels


def categories_from_names(names: Sequence[str], where: str) -> list[dict[str, Any]]:
    """`["cat", "dog"]` -> COCO categories with ids 1..C in that order."""
    names = [str(n) for n in names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: class names must be unique, repeated: {duplicates}")
    if any(not n for n in names):
        raise DatasetError(f"{where}: class names must not be empty")
    return [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)]


class CocoPayloadBuilder:
    """Collects images and annotations into a COCO instances dict (see `to_dict`)."""

    def __init__(self, categories: list[dict[str, Any]], description: str):
        self._categories = categories
        self._category_ids = {c["id"] for c in categories}
        self._description = description
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._file_names: set[str] = set()

    def add_image(self, file_name: str, width: int, height: int, where: str) -> int:
        """Register an image; returns its new id. `where` names the source for errors."""
        if file_name in self._file_names:
            raise DatasetError(f"{where}: image {file_name!r} is already described by another file")
        self._file_names.add(file_name)
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": file_name,
                             "width": int(width), "height": int(height)})
        return image_id

    def add_annotation(self, image_id: int, category_id: int, bbox: BBox, area: float,
                       segmentation: list | dict | None = None, iscrowd: int = 0) -> int:
        """Register one object of `image_id`; returns its new annotation id."""
        if category_id not in self._category_ids:
            raise ValueError(f"category id {category_id} was not declared")  # a converter bug
        annotation_id = len(self._annotations) + 1
        record = {"id": annotation_id, "image_id": int(image_id), "category_id": int(category_id),
                  "bbox": [float(v) for v in bbox], "area": float(area), "iscrowd": int(iscrowd)}
        if segmentation is not None:
            record["segmentation"] = segmentation
        self._annotations.append(record)
        return annotation_id

    def to_dict(self) -> dict[str, Any]:
        return {"info": {"description": self._description}, "images": list(self._images),
                "annotations": list(self._annotations), "categories": list(self._categories)}
