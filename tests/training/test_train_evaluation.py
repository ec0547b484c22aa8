"""`eval.every`: the trainer logs the task's real metric on val after each epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detseg.training.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the session's cls+loc smoke run (tests/conftest.py), trained with eval.every=1
def test_stage2_rows_of_metrics_csv_carry_the_val_metric_and_the_best_is_the_final_model(smoke_run):
    config, result = smoke_run("clsloc")[:2]
    assert config.eval.every == 1 and config.stage2.epochs > 1
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stage1, stage2 = [r for r in rows if r["stage"] == "1"], [r for r in rows if r["stage"] == "2"]
    # eval.every evaluates stage 1 too (the frozen backbone with the head being trained).
    assert len(stage1) == config.stage1.epochs and len(stage2) == config.stage2.epochs
    assert all(r["val_loc_accuracy"] != "" for r in stage1 + stage2)
    # The final model is the best stage-2 epoch's (lowest val_loss); the numbers logged for
    # that epoch are those of the final model, computed by `detseg evaluate`'s code path
    # (original pixels) against the family's own (model frame).
    state = json.loads((result.run_dir / "checkpoints" / "state.json").read_text())
    best = min(stage2, key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) == state["best_epoch"]
    final = json.loads((result.run_dir / "evaluation.json").read_text())
    assert float(best["val_cls_accuracy"]) == pytest.approx(final["accuracy"])
    assert float(best["val_loc_accuracy"]) == pytest.approx(final["localization_accuracy"])


def test_negative_eval_every_is_a_config_error():
    with pytest.raises(ValueError, match="eval.every"):
        load_config(REPO / "configs" / "smoke" / "clsloc.yaml", ["eval.every=-1"])
