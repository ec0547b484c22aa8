"""Fixtures of the evaluation tests; the builders live in `eval_fixtures` (a unique
module name, so other test folders' conftest modules cannot shadow them)."""

import json

import pytest

from eval_fixtures import detections, ground_truth_payload


@pytest.fixture
def coco_files(tmp_path):
    """Paths of GT.json, bbox results and segm results written in tmp_path."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ground_truth_payload()))
    bbox = tmp_path / "bbox_results.json"
    bbox.write_text(json.dumps(detections(with_mask=False)))
    segm = tmp_path / "segm_results.json"
    segm.write_text(json.dumps(detections(with_mask=True)))
    return {"gt": gt, "bbox": bbox, "segm": segm}
