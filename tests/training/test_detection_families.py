"""Detector families through the trainer: a smoke run, scored by pycocotools.

The trainer's `evaluation.json` for a detector must be the COCO numbers of its final
model on the val split in original pixels: the same numbers `detseg evaluate RUN_DIR`
reports from the run directory afterwards.
"""

from __future__ import annotations

import json
import math

import pytest

from detseg.cli import main
from detseg.training.families import FAMILIES
from detseg.training.training_data import synthetic_dir

pytestmark = pytest.mark.slow  # each case evaluates the session's smoke run of its family


@pytest.mark.parametrize("family, headline_iou_types", [("yolo", ("bbox",))])
def test_smoke_run_evaluation_matches_detseg_evaluate(family, headline_iou_types, tmp_path, smoke_run):
    config, result = smoke_run(family)[:2]  # the session's run (tests/conftest.py)
    assert result.headline_metric == FAMILIES[family].headline_metric
    for iou_type in headline_iou_types:
        value = result.metrics[f"{iou_type}_AP50"]
        assert value is None or 0.0 <= value <= 1.0

    val = synthetic_dir(config) / "annotations" / "instances_val.json"
    assert main(["evaluate", str(result.run_dir), "--annotations", str(val), "--out", str(tmp_path / "report"),
                 "--examples", "0"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for iou_type in headline_iou_types:
        stats = report["coco"][iou_type]["stats"]
        for name in ("AP", "AP50", "AP75"):
            ours, trainers = stats[name], result.metrics[f"{iou_type}_{name}"]
            assert (ours is None and trainers is None) or math.isclose(ours, trainers, abs_tol=1e-9)
