"""Crash and resume for real: SIGKILL a `detseg train` process mid-run, run it again, and end
exactly where an uninterrupted run of the same config ends.

The uninterrupted run is the session's cls+loc smoke run (`smoke_run` in tests/conftest.py,
trained in-process); this test runs the very same config (only `runs_dir` differs, which
changes nothing a run computes) through the command line in a subprocess. Training is
deterministic (`deterministic: true`, the default), so the resumed run must hold the same
weights, bit for bit, and report the same evaluation: every pass's order and augmentation
draws are a function of (seed, pass number), so the resumed epochs see the same batches.
It is also the test of `detseg train`'s output and run directory.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from detseg.training.callbacks import read_metrics
from detseg.training.config import load_config
from detseg.training.training_data import resolve_training_data

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"
pytestmark = pytest.mark.slow
POLL_S = 0.05

# Runs the real command line (argv as `detseg` takes it) with one change: right after the
# first finished stage-2 epoch (weights, best weights, state and metrics row written, stale
# checkpoints removed) the process holds still until it is killed. So the kill lands at
# that point however slow the machine is, never after the run has moved on or finished.
HOLD_AFTER_FIRST_STAGE2_EPOCH = """
import sys, threading
from detseg.training.callbacks import StageCheckpoint
finish_epoch = StageCheckpoint.on_epoch_end

def on_epoch_end(self, epoch, logs=None):
    finish_epoch(self, epoch, logs)
    if self.state.stage == 2 and self.state.epochs_done == 1:
        threading.Event().wait()  # until SIGKILL

StageCheckpoint.on_epoch_end = on_epoch_end
from detseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def detseg_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def kill_inside_stage2(arguments: list[str], state_path: Path) -> dict:
    """Run `detseg <arguments>`; SIGKILL it once its state file says a stage-2 epoch finished.

    No clock decides where the kill lands: the process holds after its first stage-2
    epoch (`HOLD_AFTER_FIRST_STAGE2_EPOCH`), its state file says so, and the kill follows,
    so it lands after a stage-2 checkpoint and before the run is done, however slow the
    machine. The file is read every `POLL_S`; when it is read changes nothing. Returns the
    state at the kill.
    """
    command = [sys.executable, "-c", HOLD_AFTER_FIRST_STAGE2_EPOCH, *arguments]
    victim = subprocess.Popen(command, cwd=REPO, env=detseg_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    try:
        while True:
            state = read_state(state_path)
            if state and state["stage"] == 2 and state["epochs_done"] >= 1:
                victim.send_signal(signal.SIGKILL)
                break
            assert victim.poll() is None, f"training ended before it could be killed: {victim.stderr.read()}"
            assert time.monotonic() < deadline, "training never reached stage 2"
            time.sleep(POLL_S)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == -signal.SIGKILL
    return read_state(state_path)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, smoke_run):
    """`(config, state at the kill, rerun, reference)`: a `detseg train` killed in stage 2, run again."""
    tmp_path = tmp_path_factory.mktemp("resumed")
    reference = smoke_run("clsloc")
    overrides = [f"runs_dir={tmp_path}", *reference.overrides, "--quiet"]
    config = load_config(SMOKE, overrides[:-1])
    assert replace(config, runs_dir=reference.config.runs_dir) == reference.config
    stage2_epochs = config.stage2.epochs
    assert stage2_epochs >= 2, "the kill needs stage-2 epochs left after the first"
    state_path = config.run_dir / "checkpoints" / "state.json"
    arguments = ["train", str(SMOKE), *overrides]

    at_kill = kill_inside_stage2(arguments, state_path)
    assert at_kill["stage"] == 2 and not at_kill["run_done"] and at_kill["epochs_done"] == 1
    assert not (config.run_dir / "model.keras").exists()
    rerun = subprocess.run([sys.executable, "-m", "detseg", *arguments], cwd=REPO, env=detseg_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return config, at_kill, rerun, reference


def test_training_continues_from_the_last_checkpoint_after_kill_9(resumed):
    config, at_kill, rerun, _ = resumed
    stage2_epochs = config.stage2.epochs
    state_path = config.run_dir / "checkpoints" / "state.json"
    steps = math.ceil(sum(1 for i in resolve_training_data(config).train.images if i.annotations)
                      / config.stage2.batch_size)
    done_steps = at_kill["epochs_done"] * steps
    assert "stage 2: resumed from" in rerun.stderr
    assert f"after epoch {at_kill['epochs_done']} (optimizer step {done_steps})" in rerun.stderr
    assert "computing" not in rerun.stderr  # stage 1 was finished: no features recomputed

    final = read_state(state_path)
    assert final["run_done"] and final["epochs_done"] == stage2_epochs
    # The optimizer state came back with the weights: its step count continued, not restarted.
    assert final["optimizer_iterations"] == stage2_epochs * steps
    rows = [(int(r["stage"]), int(r["epoch"])) for r in read_metrics(config.run_dir / "metrics.csv")]
    assert rows == [(1, e) for e in range(1, config.stage1.epochs + 1)] + [
        (2, e) for e in range(1, stage2_epochs + 1)]

    # `detseg train` printed the run's summary and left a complete run directory.
    summary = json.loads(rerun.stdout)
    assert Path(summary["run_dir"]) == config.run_dir and config.run_dir.name == "smoke_clsloc"
    for name in ("config.yaml", "label_map.json", "metrics.csv", "model.keras", "evaluation.json",
                 "checkpoints/stage1_best.weights.h5", "checkpoints/stage2_best.weights.h5"):
        assert (config.run_dir / name).is_file(), name
    evaluation = json.loads((config.run_dir / "evaluation.json").read_text())
    assert summary["localization_accuracy"] == evaluation["localization_accuracy"] is not None


def test_resumed_run_ends_with_the_weights_and_evaluation_of_an_uninterrupted_run(resumed):
    config, _, _, reference = resumed
    evaluation = json.loads((config.run_dir / "evaluation.json").read_text())
    assert evaluation == reference.result.metrics
    after_kill = keras.saving.load_model(config.run_dir / "model.keras").get_weights()
    uninterrupted = keras.saving.load_model(reference.result.run_dir / "model.keras").get_weights()
    assert len(after_kill) == len(uninterrupted)
    for a, b in zip(after_kill, uninterrupted):
        np.testing.assert_array_equal(a, b)
