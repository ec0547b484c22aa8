"""`detseg tune` as a user runs it: processes sharing one SQLite study, one killed with SIGKILL and rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

TRIALS = 5
STUDY = "kill_share"


def tune_command(runs_dir: Path, space: Path) -> list[str]:
    return [sys.executable, "-m", "detseg", "tune", "smoke/clsloc", f"runs_dir={runs_dir}", "stage2.epochs=0",
            "stage1.epochs=1", "--space", str(space), "--trials", str(TRIALS), "--study", STUDY,
            "--no-pruning", "--heartbeat", "1"]


def trials_now(storage: str) -> list:
    if not Path(storage.removeprefix("sqlite:///")).is_file():
        return []
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def wait_until(condition, what: str, timeout_s: float = 400.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_killed_search_resumes_and_two_processes_share_one_study(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("stage1.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    runs = tmp_path / "runs"
    storage = f"sqlite:///{(runs / STUDY / 'study.db').resolve()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = subprocess.Popen(tune_command(runs, space), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    other = subprocess.Popen(tune_command(runs, space), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        worker = f"pid {killed.pid}"
        # Synchronize on the study itself: kill once the first process finished a trial.
        wait_until(lambda: [t for t in trials_now(storage) if t.state.name == "COMPLETE"
                            and t.user_attrs.get("worker", "").endswith(worker)], "a finished trial of the first process")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        before_kill = {t.number: Path(t.user_attrs["run_dir"], "evaluation.json").stat().st_mtime_ns
                       for t in trials_now(storage) if t.state.name == "COMPLETE"}
        rerun = subprocess.run(tune_command(runs, space), env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        out, err = other.communicate(timeout=600)
        assert other.returncode == 0, err[-2000:]
    finally:
        for process in (killed, other):
            if process.poll() is None:
                process.kill()
    trials = trials_now(storage)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert TRIALS <= len(finished) <= TRIALS + 2  # each process may finish one past the target
    # Finished trials were not run again: their run directories are untouched, numbers unique.
    for number, mtime in before_kill.items():
        trial = next(t for t in trials if t.number == number)
        assert trial.state.name == "COMPLETE"
        assert Path(trial.user_attrs["run_dir"], "evaluation.json").stat().st_mtime_ns == mtime
    assert len({t.user_attrs["run_dir"] for t in finished}) == len(finished)
    # The trial the kill interrupted is not left RUNNING for ever: failed by its missing heartbeat.
    assert not [t for t in trials if t.state.name == "RUNNING"]
    # Both concurrent processes added trials to the one study (and so did the rerun).
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) >= 2 and f"pid {other.pid}" in " ".join(workers)
    assert (runs / STUDY / "trials.csv").is_file() and (runs / STUDY / "best_config.yaml").is_file()
    assert "trial" in out and "best localization_accuracy" in out
