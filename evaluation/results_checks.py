"""COCO results held to the ground truth's standard: every detection checked, faults named.

A detection is a JSON object:
- `image_id`, `category_id`: integers (an integral float such as `3.0` is read as `3`;
  `1.7`, `"1"` or `true` are errors) that the annotations have;
- `score`: a finite JSON number (`"0.9"` is an error, not a score);
- `bbox` (optional): `[x, y, w, h]`, 4 finite numbers with `w > 0` and `h > 0`;
- `segmentation` (optional): compressed RLE `{"size": [H, W], "counts": "..."}`,
  uncompressed RLE (`counts` a list of run lengths) or polygons `[[x0, y0, x1, y1, ...]]`,
  structurally sound (`data.segmentation_checks`, without decoding) and the size of its image.

Either every detection of a file carries a `bbox` or none does: pycocotools' `loadRes`
chooses how to read the whole file from the first record alone, so a mixed file would be
scored by an accident of order. The first fault raises a `DatasetError` of one line naming
the file, the detection (its index in the list and its `image_id`) and the field.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from pycocotools import mask as coco_mask

from detseg.data.coco import CocoDataset
from detseg.data.errors import DatasetError
from detseg.data.json_values import describe, is_int, is_number
from detseg.data.segmentation_checks import segmentation_problem

REQUIRED_FIELDS = ("image_id", "category_id", "score")


def checked_detections(records: Any, dataset: CocoDataset, where: str) -> list[dict[str, Any]]:
    """Check every detection of `records` against `dataset`; return normalized copies.

    The copies have int ids, a float score, a float `bbox` where the detection has one and
    a compressed RLE `segmentation` (string counts; polygons and uncompressed RLE become
    the mask pycocotools would build from them) where it has one; other fields are kept.
    """
    if not isinstance(records, (list, tuple)):
        raise DatasetError(f"{where}: COCO results must be a JSON list of detections, got {describe(records)}")
    sizes = {image.id: (image.height, image.width) for image in dataset.images}
    category_ids = {category.id for category in dataset.categories}
    annotations = f"the annotations {dataset.source}" if dataset.source else "the annotations"
    checked = []
    for index, record in enumerate(records):
        at = _record_name(where, index, record)
        try:
            checked.append(_checked_detection(record, sizes, category_ids, annotations))
        except _Fault as fault:
            raise DatasetError(f"{at}: {fault}") from None
    _check_boxes_everywhere_or_nowhere(checked, records, where)
    return checked


class _Fault(Exception):
    """What is wrong with one detection; `checked_detections` adds which one."""


def _record_name(where: str, index: int, record: Any) -> str:
    if isinstance(record, Mapping) and "image_id" in record:
        return f"{where}: detection {index} (image_id {_shown(record['image_id'])})"
    return f"{where}: detection {index}"


def _shown(value: Any) -> str:
    return str(value) if is_number(value) else describe(value)


def _checked_detection(record: Any, sizes: dict[int, tuple[int, int]], category_ids: set[int],
                       annotations: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise _Fault(f"must be an object, got {describe(record)}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise _Fault(f"missing field(s) {missing}")
    out = dict(record)
    out["image_id"] = _integer(record["image_id"], "image_id")
    out["category_id"] = _integer(record["category_id"], "category_id")
    if out["image_id"] not in sizes:
        raise _Fault(f"image_id {out['image_id']} is not an image of {annotations}")
    if out["category_id"] not in category_ids:
        raise _Fault(f"category_id {out['category_id']} is not a category of {annotations}")
    out["score"] = _finite_number(record["score"], "score")
    if "bbox" in record:
        out["bbox"] = _checked_box(record["bbox"])
    if "segmentation" in record:
        out["segmentation"] = _compressed_rle(record["segmentation"], *sizes[out["image_id"]])
    return out


def _integer(value: Any, name: str) -> int:
    if is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Fault(f"{name} must be an integer, got {describe(value)}")


def _finite_number(value: Any, name: str) -> float:
    if not is_number(value):
        raise _Fault(f"{name} must be a number, got {describe(value)}")
    if not math.isfinite(value):
        raise _Fault(f"{name} is {value}")
    return float(value)


def _checked_box(box: Any) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(is_number(v) for v in box):
        raise _Fault(f"bbox must be 4 numbers [x, y, w, h], got {describe(box)}")
    if not all(math.isfinite(v) for v in box):
        raise _Fault(f"bbox {list(box)} has a non-finite value")
    if box[2] <= 0 or box[3] <= 0:
        raise _Fault(f"bbox {list(box)} has zero or negative width/height")
    return [float(v) for v in box]


def _compressed_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """The segmentation as compressed RLE with string counts, after the structural checks."""
    if segmentation is None or segmentation == []:
        raise _Fault(f"segmentation must be an RLE object or a list of polygons, got {describe(segmentation)}")
    problem = segmentation_problem(segmentation, None, None)  # structure only: decoding all is slow
    if problem is None and isinstance(segmentation, dict) and list(segmentation["size"]) != [height, width]:
        problem = f"RLE size {list(segmentation['size'])} is not its image's [height, width] [{height}, {width}]"
    if problem is not None:
        raise _Fault(f"segmentation {problem}")
    if isinstance(segmentation, list):  # what pycocotools' annToRLE does with polygons
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(dict(segmentation), height, width)
    else:
        return {"size": [height, width], "counts": segmentation["counts"]}
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _check_boxes_everywhere_or_nowhere(checked: Sequence[Mapping[str, Any]], records: Sequence[Any],
                                       where: str) -> None:
    with_box = ["bbox" in record for record in checked]
    if any(with_box) and not all(with_box):
        index = with_box.index(not with_box[0])
        first = "has one" if with_box[0] else "has none"
        raise DatasetError(f"{_record_name(where, index, records[index])}: "
                           f"{'has no' if with_box[0] else 'has a'} 'bbox' while detection 0 {first}; "
                           f"give every detection a bbox, or none")
