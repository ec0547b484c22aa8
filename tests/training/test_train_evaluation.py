"""`eval.every`: the trainer logs the task's real metric on val in both stages, and can stop on it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detseg.training.config import load_config
from detseg.training.trainer import train

pytestmark = pytest.mark.slow  # a tiny two-stage run

REPO = Path(__file__).resolve().parents[2]


def test_metrics_csv_carries_the_val_metric_in_both_stages_when_monitored(tmp_path):
    config = load_config(REPO / "configs" / "smoke" / "clsloc.yaml",
                         [f"runs_dir={tmp_path}", "stage1.epochs=2", "stage2.epochs=1", "eval.every=1",
                          "early_stopping.monitor=val_loc_accuracy", "early_stopping.mode=max"])
    result = train(config, verbose=0, log=lambda message: None)
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stage1, stage2 = [r for r in rows if r["stage"] == "1"], [r for r in rows if r["stage"] == "2"]
    # Stage 1 trains on cached features; its pixel model (frozen backbone + that head) is evaluated.
    assert len(stage1) == 2 and all(r["val_loc_accuracy"] != "" for r in stage1)
    assert len(stage2) == 1
    final = json.loads((result.run_dir / "evaluation.json").read_text())
    # One stage-2 epoch: the logged numbers are those of the final model, computed by
    # `detseg evaluate`'s code path (original pixels) against the family's own (model frame).
    assert float(stage2[0]["val_cls_accuracy"]) == pytest.approx(final["accuracy"])
    assert float(stage2[0]["val_loc_accuracy"]) == pytest.approx(final["localization_accuracy"])


def test_monitoring_a_task_metric_needs_it_every_epoch(tmp_path):
    config = load_config(REPO / "configs" / "smoke" / "clsloc.yaml",
                         [f"runs_dir={tmp_path}", "eval.every=2", "early_stopping.monitor=val_loc_accuracy"])
    with pytest.raises(ValueError, match="val_loc_accuracy.*eval.every: 1"):
        train(config, verbose=0, log=lambda message: None)
    assert not (tmp_path / config.name).exists()  # refused before anything was written


def test_negative_eval_every_is_a_config_error():
    with pytest.raises(ValueError, match="eval.every"):
        load_config(REPO / "configs" / "smoke" / "clsloc.yaml", ["eval.every=-1"])
