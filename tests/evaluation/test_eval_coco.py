"""COCO evaluation: our numbers are pycocotools' own, per class too; edge cases and errors."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from eval_fixtures import detections, direct_cocoeval, ground_truth_payload
from detseg.data.coco import dataset_from_dict, load_coco
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import STAT_NAMES, evaluate_coco
from detseg.evaluation.coco_results import load_coco_results

PER_CLASS_STATS = {"AP": 0, "AP50": 1, "AP75": 2, "AR100": 8}  # positions in COCOeval.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_twelve_stats_equal_pycocotools_run_directly(coco_files, iou_type):
    ours = evaluate_coco(coco_files["gt"], coco_files[iou_type], iou_type, progress=False)
    direct = direct_cocoeval(coco_files["gt"], coco_files[iou_type], iou_type)
    assert ours["stats_raw"] == [float(v) for v in direct.stats]
    for name, value in zip(STAT_NAMES, direct.stats):
        assert ours["stats"][name] == (None if value == -1 else value)
    # the fixture is meant to be informative: no stat is trivially 0 or 1 for AP
    assert 0 < ours["stats"]["AP"] < 1 and ours["num_detections"] == len(detections())


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_class_metrics_equal_cocoeval_restricted_to_that_class(coco_files, iou_type):
    ours = evaluate_coco(coco_files["gt"], coco_files[iou_type], iou_type, progress=False)
    assert [row["coco_id"] for row in ours["per_class"]] == [3, 7, 42, 99]  # COCO id order
    for row in ours["per_class"]:
        direct = direct_cocoeval(coco_files["gt"], coco_files[iou_type], iou_type, cat_ids=[row["coco_id"]])
        for name, position in PER_CLASS_STATS.items():
            expected = direct.stats[position]
            assert row[name] == (None if expected == -1 else expected), (row["name"], name)


def test_class_without_ground_truth_is_none_and_has_no_curve(coco_files):
    ours = evaluate_coco(coco_files["gt"], coco_files["bbox"], "bbox", progress=False)
    unicorn = next(row for row in ours["per_class"] if row["coco_id"] == 99)
    assert unicorn["num_gt"] == 0 and unicorn["AP"] is None and unicorn["AR100"] is None
    curves = {c["coco_id"]: c for c in ours["pr_curves"]["classes"]}
    assert curves[99]["precision_iou50"] is None
    assert len(curves[3]["precision_iou50"]) == len(ours["pr_curves"]["recall"]) == 101
    # cat: one of three objects found only at IoU < 0.75, so its 0.75 curve drops to 0 earlier
    assert curves[3]["precision_iou50"][50] > curves[3]["precision_iou75"][50] == 0.0


def test_pr_curve_matches_the_precision_array_of_cocoeval(coco_files):
    ours = evaluate_coco(coco_files["gt"], coco_files["bbox"], "bbox", progress=False)
    direct = direct_cocoeval(coco_files["gt"], coco_files["bbox"], "bbox")
    k = direct.params.catIds.index(7)
    expected = direct.eval["precision"][5, :, k, 0, 2]  # IoU 0.75, area all, maxDets 100
    assert ours["pr_curves"]["classes"][k]["precision_iou75"] == expected.tolist()


@pytest.mark.parametrize("empty", ["file", "list"])
def test_empty_predictions_give_zeros_without_crashing(coco_files, tmp_path, empty):
    results = []
    if empty == "file":
        results = tmp_path / "empty.json"
        results.write_text("[]")
    for iou_type in ("bbox", "segm"):
        ours = evaluate_coco(coco_files["gt"], results, iou_type, progress=False)
        # the ground truth has small, medium and large objects: every stat is measurable
        assert ours["stats_raw"] == [0.0] * 12 and ours["num_detections"] == 0
        assert [row["AP"] for row in ours["per_class"]] == [0.0, 0.0, 0.0, None]


def test_segm_errors_name_the_fault(coco_files):
    with pytest.raises(DatasetError, match="segm .*needs segmentations, but the detections hold boxes only"):
        evaluate_coco(coco_files["gt"], detections(with_mask=False), "segm", progress=False)
    some_masks = detections(with_mask=True)[:2]
    del some_masks[1]["segmentation"]
    some_masks[1]["bbox"], some_masks[0]["bbox"] = [0, 0, 5, 5], [0, 0, 5, 5]
    with pytest.raises(DatasetError, match=r"detection 1 \(image_id 11\): segm evaluation needs a 'segmentation'"):
        evaluate_coco(coco_files["gt"], some_masks, "segm", progress=False)
    wrong_size = detections(with_mask=True)[:1]
    wrong_size[0]["segmentation"] = coco_mask.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    wrong_size[0]["segmentation"]["counts"] = wrong_size[0]["segmentation"]["counts"].decode()
    with pytest.raises(DatasetError, match=r"detection 0 \(image_id 11\): segmentation RLE size \[10, 10\] is not"):
        evaluate_coco(coco_files["gt"], wrong_size, "segm", progress=False)


def test_bad_files_and_ground_truth_without_area_are_named(coco_files, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 11,')
    with pytest.raises(DatasetError, match="broken.json: invalid JSON at line 1"):
        evaluate_coco(coco_files["gt"], broken, progress=False)
    with pytest.raises(DatasetError, match="missing.json: file not found"):
        evaluate_coco(tmp_path / "missing.json", coco_files["bbox"], progress=False)
    not_a_list = tmp_path / "object.json"
    not_a_list.write_text('{"image_id": 11}')
    with pytest.raises(DatasetError, match="object.json: COCO results must be a JSON list"):
        evaluate_coco(coco_files["gt"], not_a_list, progress=False)
    payload = ground_truth_payload()
    del payload["annotations"][2]["area"]
    no_area = tmp_path / "no_area.json"
    no_area.write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=r"no_area.json: annotation\(s\) \[3\] have no 'area'"):
        evaluate_coco(no_area, coco_files["bbox"], progress=False)


def test_dataset_input_gives_the_same_numbers_as_the_file(coco_files):
    dataset = load_coco(coco_files["gt"])
    for iou_type in ("bbox", "segm"):
        from_file = evaluate_coco(coco_files["gt"], coco_files[iou_type], iou_type, progress=False)
        records = json.loads(coco_files[iou_type].read_text())
        from_dataset = evaluate_coco(dataset, records, iou_type, progress=False)
        assert from_dataset["stats_raw"] == from_file["stats_raw"]
        assert from_dataset["per_class"] == from_file["per_class"]


def test_evaluation_leaves_callers_results_untouched(coco_files):
    records = detections(with_mask=True)
    before = json.dumps(records)
    evaluate_coco(coco_files["gt"], records, "segm", progress=False)
    assert json.dumps(records) == before


def test_bbox_of_mask_only_results_comes_from_the_mask():
    dataset = dataset_from_dict(ground_truth_payload(), image_dir=None)
    record = detections(with_mask=True)[0]  # mask of the box [2, 2, 20, 16]
    (checked,) = load_coco_results([record], dataset, "bbox")
    assert checked["bbox"] == [2.0, 2.0, 20.0, 16.0]


def test_box_results_carrying_polygons_are_scored_by_their_boxes(coco_files):
    plain = evaluate_coco(coco_files["gt"], coco_files["bbox"], "bbox", progress=False)
    with_polygons = detections()
    for record in with_polygons:
        record["segmentation"] = [[0, 0, 1, 0, 1, 1]]  # not RLE: irrelevant to box IoU
    assert evaluate_coco(coco_files["gt"], with_polygons, "bbox", progress=False)["stats_raw"] == plain["stats_raw"]
