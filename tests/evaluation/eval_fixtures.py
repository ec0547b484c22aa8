"""Builders for the evaluation tests: a small hand-made COCO ground truth and detections for the evaluation tests.

Category ids are non-contiguous (3, 7, 42) plus a category (99) with no ground truth.
Objects come as polygons, compressed RLE (string counts) and one crowd region in
uncompressed RLE; one image has no objects. The detections mix perfect, shifted,
wrong-class and spurious ones with float boxes, so every COCO stat is strictly between
0 and 1 or clearly defined.
"""

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detseg.data.coco import encode_mask

CATEGORIES = [{"id": 42, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"},
              {"id": 99, "name": "unicorn"}]
IMAGE_SIZES = {11: (48, 64), 12: (48, 64), 13: (96, 128), 14: (48, 64)}  # id -> (height, width)


def box_mask(x, y, w, h, height, width):
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def _polygon_object(ann_id, image_id, category_id, x, y, w, h):
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
            "area": float(w * h), "iscrowd": 0, "segmentation": [polygon]}


def _rle_object(ann_id, image_id, category_id, x, y, w, h):
    mask = box_mask(x, y, w, h, *IMAGE_SIZES[image_id])
    mask[y, x] = 0  # not quite a box, so mask IoU differs from box IoU
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
            "area": float(mask.sum()), "iscrowd": 0, "segmentation": encode_mask(mask)}


def _crowd_object(ann_id, image_id, category_id, x, y, w, h):
    mask = box_mask(x, y, w, h, *IMAGE_SIZES[image_id])
    flat = mask.flatten(order="F")  # uncompressed COCO RLE: run lengths, column-major, from 0s
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
            "area": float(w * h), "iscrowd": 1,
            "segmentation": {"size": list(IMAGE_SIZES[image_id]), "counts": runs}}


def ground_truth_payload():
    images = [{"id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width}
              for image_id, (height, width) in IMAGE_SIZES.items()]
    annotations = [
        _polygon_object(1, 11, 3, 2, 2, 20, 16),
        _rle_object(2, 11, 7, 30, 10, 24, 30),
        _polygon_object(3, 11, 42, 4, 30, 6, 6),  # small
        _polygon_object(4, 12, 3, 10, 5, 30, 30),
        _crowd_object(5, 12, 7, 40, 0, 24, 48),
        _rle_object(6, 12, 42, 0, 40, 9, 8),
        _polygon_object(7, 13, 7, 5, 5, 110, 88),  # large
        _polygon_object(8, 13, 3, 60, 10, 40, 30),
        # image 14 has no objects
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def _detection(image_id, category_id, box, score, with_mask):
    out = {"image_id": image_id, "category_id": category_id, "score": score}
    if with_mask:
        x, y, w, h = (int(round(v)) for v in box)
        out["segmentation"] = encode_mask(box_mask(x, y, w, h, *IMAGE_SIZES[image_id]))
    else:
        out["bbox"] = [float(v) for v in box]
    return out


def detections(with_mask=False):
    """Detections against `ground_truth_payload`; masks follow the boxes when `with_mask`."""
    rows = [
        (11, 3, [2.0, 2.0, 20.0, 16.0], 0.95),        # perfect
        (11, 7, [31.5, 11.25, 23.0, 28.5], 0.9),      # slightly shifted, float box
        (11, 42, [6.0, 31.0, 6.0, 6.0], 0.4),         # small, shifted: IoU ~0.4
        (11, 3, [35.0, 12.0, 20.0, 20.0], 0.3),       # wrong class on the dog
        (12, 3, [12.5, 7.5, 30.0, 30.0], 0.85),       # shifted
        (12, 7, [41.0, 1.0, 22.0, 46.0], 0.8),        # on the crowd region: ignored
        (12, 42, [0.0, 40.0, 9.0, 8.0], 0.6),         # perfect, small
        (13, 7, [5.0, 5.0, 110.0, 88.0], 0.7),        # perfect, large
        (13, 3, [62.0, 13.0, 40.0, 30.0], 0.55),      # shifted, medium
        (13, 3, [1.0, 1.0, 10.0, 10.0], 0.65),        # spurious
        (14, 42, [20.0, 20.0, 10.0, 12.0], 0.5),      # spurious on an image without objects
        (13, 7, [10.0, 10.0, 30.0, 20.0], 0.2),       # duplicate-ish, low score
    ]
    return [_detection(*row, with_mask=with_mask) for row in rows]


def write_images(folder):
    """Plain grey PNGs with a lighter square per object, named as the ground truth says."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image_id, (height, width) in IMAGE_SIZES.items():
        pixels = np.full((height, width, 3), 90, np.uint8)
        for annotation in ground_truth_payload()["annotations"]:
            if annotation["image_id"] == image_id:
                x, y, w, h = annotation["bbox"]
                pixels[y:y + h, x:x + w] = 170
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
    return folder


def direct_cocoeval(gt_path, results_path, iou_type, cat_ids=None):
    """pycocotools run the documented way, independently of our code."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(results_path)), iou_type)
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator
