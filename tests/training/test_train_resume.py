"""Crash and resume for real: SIGKILL a `detseg train` process mid-run, run it again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detseg.training.callbacks import read_metrics
from detseg.training.config import load_config
from detseg.training.training_data import resolve_training_data

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"
pytestmark = pytest.mark.slow

STAGE2_EPOCHS = 4
STAGE2_BATCH = 4  # small batches: more steps per epoch, so the kill lands inside one


def detseg_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_training_continues_from_the_last_checkpoint_after_kill_9(tmp_path):
    overrides = [f"runs_dir={tmp_path}", "stage1.epochs=2", f"stage2.epochs={STAGE2_EPOCHS}",
                 f"stage2.batch_size={STAGE2_BATCH}", "early_stopping.enabled=false"]
    command = [sys.executable, "-m", "detseg", "train", str(SMOKE), *overrides, "--quiet"]
    config = load_config(SMOKE, overrides)
    state_path = config.run_dir / "checkpoints" / "state.json"

    victim = subprocess.Popen(command, cwd=REPO, env=detseg_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while True:  # wait for the first finished fine-tuning epoch, then kill inside the next
            state = read_state(state_path)
            if state and state["stage"] == 2 and state["epochs_done"] >= 1:
                break
            assert victim.poll() is None, f"training ended before it could be killed: {victim.stderr.read()}"
            assert time.monotonic() < deadline, "training never reached stage 2"
            time.sleep(0.02)
        time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    at_kill = read_state(state_path)
    assert at_kill["stage"] == 2 and not at_kill["run_done"]
    assert 1 <= at_kill["epochs_done"] < STAGE2_EPOCHS
    assert not (config.run_dir / "model.keras").exists()

    rerun = subprocess.run(command, cwd=REPO, env=detseg_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    steps = math.ceil(sum(1 for i in resolve_training_data(config).train.images if i.annotations)
                      / STAGE2_BATCH)
    done_steps = at_kill["epochs_done"] * steps
    assert f"stage 2: resumed from" in rerun.stderr
    assert f"after epoch {at_kill['epochs_done']} (optimizer step {done_steps})" in rerun.stderr
    assert "computing" not in rerun.stderr  # stage 1 was finished: no features recomputed

    final = read_state(state_path)
    assert final["run_done"] and final["epochs_done"] == STAGE2_EPOCHS
    # The optimizer state came back with the weights: its step count continued, not restarted.
    assert final["optimizer_iterations"] == STAGE2_EPOCHS * steps
    rows = [(int(r["stage"]), int(r["epoch"])) for r in read_metrics(config.run_dir / "metrics.csv")]
    assert rows == [(1, 1), (1, 2)] + [(2, e) for e in range(1, STAGE2_EPOCHS + 1)]
    assert (config.run_dir / "model.keras").is_file()
    assert json.loads(rerun.stdout)["localization_accuracy"] is not None
