"""Results are held to the ground truth's standard; parity with pycocotools; IoU type from content."""

import json

import numpy as np
import pytest

from eval_fixtures import IMAGE_SIZES, box_mask, detections, direct_cocoeval
from detseg.data.coco import dataset_from_dict, encode_mask, load_coco
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import STAT_NAMES, evaluate_coco
from detseg.evaluation.coco_results import load_coco_results
from detseg.evaluation.detection_report import build_detection_report, evaluate_predictions
from detseg.evaluation.report_document import format_stats_table

GOOD = {"image_id": 11, "category_id": 3, "bbox": [2.0, 2.0, 20.0, 16.0], "score": 0.9}


@pytest.mark.parametrize("change, message", [
    ({"bbox": [2, 2, -20, 16]}, r"bbox \[2, 2, -20, 16\] has zero or negative width/height"),
    ({"bbox": [2, 2, 20, 0]}, r"bbox \[2, 2, 20, 0\] has zero or negative width/height"),
    ({"bbox": [2, 2, float("inf"), 16]}, r"bbox \[2, 2, inf, 16\] has a non-finite value"),
    ({"bbox": [2, 2, 20]}, "bbox must be 4 numbers"),
    ({"image_id": 11.7}, "image_id must be an integer, got a number 11.7"),
    ({"image_id": "11"}, 'image_id must be an integer, got a string "11"'),
    ({"category_id": True}, "category_id must be an integer, got a boolean"),
    ({"score": "0.9"}, 'score must be a number, got a string "0.9"'),
    ({"score": float("nan")}, "score is nan"),
    ({"image_id": 999}, "image_id 999 is not an image of the annotations .*gt.json"),
    ({"category_id": 5}, "category_id 5 is not a category of the annotations"),
    ({"segmentation": "a mask"}, "segmentation must be a list of polygons or an RLE object"),
    ({"segmentation": {"counts": "abc"}}, "segmentation RLE must have 'size' and 'counts'"),
    ({"segmentation": [[1, 2, 3, 4]]}, "segmentation polygon 0 has 2 point"),
    ({"segmentation": None}, "segmentation must be an RLE object or a list of polygons, got null"),
])
def test_each_bad_detection_is_an_error_naming_file_index_and_image(coco_files, tmp_path, change, message):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(detections()[:2] + [{**GOOD, **change}]))
    image = change.get("image_id", 11)
    shown = json.dumps(image) if isinstance(image, str) else str(image).replace(".", r"\.")
    pattern = rf"results\.json: detection 2 \(image_id ({shown}|a string {shown})\): {message}"
    for iou_type in ("bbox", "segm") if "segmentation" in change else ("bbox",):
        with pytest.raises(DatasetError, match=pattern) as raised:
            evaluate_coco(coco_files["gt"], path, iou_type, progress=False)
        assert "\n" not in str(raised.value)


def test_integral_float_ids_are_read_as_integers(coco_files):
    plain = evaluate_coco(coco_files["gt"], coco_files["bbox"], "bbox", progress=False)
    floats = [{**r, "image_id": float(r["image_id"]), "category_id": float(r["category_id"])} for r in detections()]
    assert evaluate_coco(coco_files["gt"], floats, "bbox", progress=False)["stats_raw"] == plain["stats_raw"]


def test_boxes_on_some_detections_only_are_an_error(coco_files):
    mixed = detections(with_mask=True)[:3]
    mixed[0]["bbox"] = [2.0, 2.0, 20.0, 16.0]
    with pytest.raises(DatasetError, match=r"detection 1 \(image_id 11\): has no 'bbox' while detection 0 has one"):
        evaluate_coco(coco_files["gt"], mixed, "segm", progress=False)


def _boxes_and_masks(tmp_path):
    """Every detection with its mask and a box 4x its mask's size: box and mask areas fall
    in different COCO area ranges, so the two area conventions give different numbers."""
    records = detections(with_mask=True)
    for record, boxed in zip(records, detections(with_mask=False)):
        x, y, w, h = boxed["bbox"]
        record["bbox"] = [x, y, 4 * w, 4 * h]
    path = tmp_path / "boxes_and_masks.json"
    path.write_text(json.dumps(records))
    masks_only = tmp_path / "masks_only.json"
    masks_only.write_text(json.dumps([{k: v for k, v in r.items() if k != "bbox"} for r in records]))
    return path, masks_only


def test_default_numbers_equal_pycocotools_and_segm_area_mask_differs_where_areas_do(coco_files, tmp_path):
    path, masks_only = _boxes_and_masks(tmp_path)
    for iou_type in ("bbox", "segm"):
        ours = evaluate_coco(coco_files["gt"], path, iou_type, progress=False)
        assert ours["stats_raw"] == [float(v) for v in direct_cocoeval(coco_files["gt"], path, iou_type).stats]
    by_box_area = evaluate_coco(coco_files["gt"], path, "segm", progress=False)
    by_mask_area = evaluate_coco(coco_files["gt"], path, "segm", progress=False, segm_area="mask")
    # with the boxes set aside, pycocotools reads the areas from the masks
    direct_masks = direct_cocoeval(coco_files["gt"], masks_only, "segm")
    assert by_mask_area["stats_raw"] == [float(v) for v in direct_masks.stats]
    differ = [n for n, a, b in zip(STAT_NAMES, by_box_area["stats_raw"], by_mask_area["stats_raw"]) if a != b]
    assert differ and set(differ) <= {"APs", "APm", "APl", "ARs", "ARm", "ARl"}
    assert by_box_area["object_areas"] == "object areas: pycocotools default"
    assert by_mask_area["object_areas"] == "object areas from masks (--segm-area mask)"
    assert "object areas from masks (--segm-area mask)" in format_stats_table(by_mask_area)


def test_polygon_and_uncompressed_rle_results_score_as_pycocotools_scores_them(coco_files, tmp_path):
    records = detections()
    for record in records:
        x, y, w, h = record["bbox"]
        record["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    mask = box_mask(2, 2, 20, 16, *IMAGE_SIZES[11]).flatten(order="F")
    changes = np.flatnonzero(np.diff(mask)) + 1
    records[0]["segmentation"] = {"size": list(IMAGE_SIZES[11]),
                                  "counts": np.diff(np.concatenate([[0], changes, [mask.size]])).tolist()}
    path = tmp_path / "polygons.json"
    path.write_text(json.dumps(records))
    ours = evaluate_coco(coco_files["gt"], path, "segm", progress=False)
    assert ours["stats_raw"] == [float(v) for v in direct_cocoeval(coco_files["gt"], path, "segm").stats]
    assert 0 < ours["stats"]["AP"] < 1


def test_iou_types_default_from_the_results_content(coco_files, tmp_path):
    path, _ = _boxes_and_masks(tmp_path)
    for results, expected in ((coco_files["segm"], ["segm"]), (coco_files["bbox"], ["bbox"]),
                              (path, ["bbox", "segm"])):
        report = build_detection_report(coco_files["gt"], results, None, progress=False)
        assert list(report["coco"]) == expected, results
        assert report["settings"]["iou_types"] == expected


def test_masks_only_results_scored_as_bbox_match_pycocotools(coco_files):
    # pycocotools derives the boxes (and takes areas from the masks) itself
    ours = evaluate_coco(coco_files["gt"], coco_files["segm"], "bbox", progress=False)
    assert ours["stats_raw"] == [float(v) for v in direct_cocoeval(coco_files["gt"], coco_files["segm"], "bbox").stats]
    dataset = dataset_from_dict(json.loads(coco_files["gt"].read_text()), image_dir=None)
    (checked,) = load_coco_results(detections(with_mask=True)[:1], dataset, "bbox")
    assert checked["bbox"] == [2.0, 2.0, 20.0, 16.0]  # for the confusion matrix and the pictures


def test_zero_size_predicted_boxes_are_left_out_and_counted(coco_files):
    dataset = load_coco(coco_files["gt"])
    label_map = dataset.label_map
    mask = box_mask(2, 2, 20, 16, *IMAGE_SIZES[11])
    prediction = {"boxes": np.array([[2, 2, 22, 18], [0, 5, 0, 9], [4, 4, 9, 4]], np.float32),
                  "scores": np.array([0.9, 0.8, 0.7]), "classes": np.array([label_map.index_of(3)] * 3),
                  "masks": np.stack([mask, mask, mask])}
    results, report = evaluate_predictions(dataset, [(11, prediction)], ("bbox", "segm"), progress=False)
    assert len(results) == 1 and results[0]["segmentation"] == encode_mask(mask)
    assert report["source"]["zero_size_boxes_left_out"] == 2
