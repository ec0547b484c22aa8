"""Structural checks of COCO segmentations, run before pycocotools sees them.

pycocotools does not check: NaN polygon points or RLE counts that do not cover the image
make it hang, crash or return garbage. Each check returns a message or None.
"""

from __future__ import annotations

import math
from typing import Any

from detseg.data.coco import decode_segmentation
from detseg.data.json_values import describe, is_int, is_number

# Polygon points may stick out of the image by this much (float rounding).
POINT_TOLERANCE_PX = 1.0
# pycocotools decodes into a full [height, width] array: not for absurd declared sizes.
MAX_DECODE_PIXELS = 1 << 27
# Compressed RLE counts: 6-bit groups stored as characters from '0' (48) upwards.
RLE_CHAR_OFFSET = 48
RLE_GROUP_CONTINUES = 0x20
RLE_GROUP_SIGN = 0x10
RLE_GROUP_VALUE_MASK = 0x1F


def segmentation_problem(segmentation: Any, height: int | None, width: int | None) -> str | None:
    """What is wrong with a segmentation (absent is fine), or None.

    Structure is checked first because pycocotools does not: NaN polygon points or
    RLE counts that do not cover the image make it hang, crash or return garbage.
    """
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        problem = _polygons_problem(segmentation, height, width)
    elif isinstance(segmentation, dict):
        problem = _rle_problem(segmentation, height, width)
    else:
        return f"must be a list of polygons or an RLE object, got {describe(segmentation)}"
    if problem or height is None or width is None or height * width > MAX_DECODE_PIXELS:
        return problem
    try:
        decode_segmentation(segmentation, height, width)
    except Exception as e:  # pycocotools raises several kinds; all mean the same to the user
        return f"does not decode ({type(e).__name__}: {e})"
    return None


def _polygons_problem(polygons: list, height: int | None, width: int | None) -> str | None:
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(is_number(v) for v in polygon):
            return f"polygon {k} must be a list of numbers [x0, y0, x1, y1, ...], got {describe(polygon)}"
        if not all(math.isfinite(v) for v in polygon):
            return f"polygon {k} contains NaN or infinity"
        if len(polygon) % 2:
            return f"polygon {k} has an odd number of coordinates ({len(polygon)})"
        if len(polygon) < 6:
            return f"polygon {k} has {len(polygon) // 2} point(s); a polygon needs at least 3"
        if height is not None and width is not None:
            xs, ys = polygon[0::2], polygon[1::2]
            if (min(xs) < -POINT_TOLERANCE_PX or min(ys) < -POINT_TOLERANCE_PX
                    or max(xs) > width + POINT_TOLERANCE_PX or max(ys) > height + POINT_TOLERANCE_PX):
                return f"polygon {k} has points outside the {width}x{height} image"
    return None


def _rle_problem(rle: dict, height: int | None, width: int | None) -> str | None:
    """RLE `{"size": [height, width], "counts": [runs...] or "compressed"}` structure."""
    if "size" not in rle or "counts" not in rle:
        return f"RLE must have 'size' and 'counts', got keys {sorted(rle)}"
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, list) or len(size) != 2 or not all(is_int(v) and v >= 0 for v in size):
        return f"RLE size must be [height, width] integers, got {describe(size)}"
    if height is not None and width is not None and size != [height, width]:
        return f"RLE size {size} does not match the image's [height, width] [{height}, {width}]"
    if isinstance(counts, list):
        if not all(is_int(v) and v >= 0 for v in counts):
            return "uncompressed RLE counts must be non-negative integers"
        runs = counts
    elif isinstance(counts, str):
        runs = compressed_rle_runs(counts)
        if runs is None or any(v < 0 for v in runs):
            return "compressed RLE counts string is not valid"
    else:
        return f"RLE counts must be a list of integers or a string, got {describe(counts)}"
    if sum(runs) != size[0] * size[1]:
        return f"RLE counts cover {sum(runs)} pixels but size {size} has {size[0] * size[1]}"
    return None


def compressed_rle_runs(text: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE `counts` string; None if malformed.

    Each run is written in 5-bit groups, least significant first, one character per
    group (`chr(48 + group)`); bit 0x20 says another group follows, bit 0x10 of the last
    group is the sign. From the third run on, a run is stored as its difference to the
    run two places before it.
    """
    runs: list[int] = []
    value = shift = 0
    for char in text:
        group = ord(char) - RLE_CHAR_OFFSET
        if not 0 <= group < 2 * RLE_GROUP_CONTINUES:
            return None
        value |= (group & RLE_GROUP_VALUE_MASK) << shift
        shift += 5
        if group & RLE_GROUP_CONTINUES:
            continue
        if group & RLE_GROUP_SIGN:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if shift else runs
