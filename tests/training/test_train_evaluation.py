"""`eval.every`: the trainer logs the task's real metric on val while fine-tuning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detseg.training.config import load_config
from detseg.training.trainer import train

pytestmark = pytest.mark.slow  # a tiny two-stage run

REPO = Path(__file__).resolve().parents[2]


def test_stage2_rows_of_metrics_csv_carry_the_val_metric_of_the_final_model(tmp_path):
    config = load_config(REPO / "configs" / "smoke" / "clsloc.yaml",
                         [f"runs_dir={tmp_path}", "stage1.epochs=1", "stage2.epochs=1", "eval.every=1"])
    result = train(config, verbose=0, log=lambda message: None)
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stage1, stage2 = [r for r in rows if r["stage"] == "1"], [r for r in rows if r["stage"] == "2"]
    assert stage1 and all(r["val_loc_accuracy"] == "" for r in stage1)  # features-only model: not evaluated
    assert len(stage2) == 1
    final = json.loads((result.run_dir / "evaluation.json").read_text())
    # One stage-2 epoch: the logged numbers are those of the final model, computed by
    # `detseg evaluate`'s code path (original pixels) against the family's own (model frame).
    assert float(stage2[0]["val_cls_accuracy"]) == pytest.approx(final["accuracy"])
    assert float(stage2[0]["val_loc_accuracy"]) == pytest.approx(final["localization_accuracy"])


def test_negative_eval_every_is_a_config_error():
    with pytest.raises(ValueError, match="eval.every"):
        load_config(REPO / "configs" / "smoke" / "clsloc.yaml", ["eval.every=-1"])
