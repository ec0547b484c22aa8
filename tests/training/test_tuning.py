"""`detseg tune` as a user runs it: processes sharing one SQLite study, one killed with SIGKILL and rerun."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
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


def lines_of(stream) -> queue.Queue:
    """The lines a process writes to `stream`, as they come (None after the last one)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_second_trial(lines: queue.Queue, timeout_s: float = 400.0) -> str:
    """Blocks until the process logs the start of a trial after finishing one: Optuna records
    a trial COMPLETE before it starts the next, so one trial is in the study and the next is
    RUNNING. Returns that line."""
    deadline = time.monotonic() + timeout_s
    finished_one = False
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise AssertionError("timed out waiting for the first process's second trial") from None
        if line is None:
            raise AssertionError("the first process ended before it started a second trial")
        if re.search(r"trial \d+: localization_accuracy = ", line):
            finished_one = True
        elif finished_one and re.search(r"trial \d+: stage1\.lr=", line):
            return line


@pytest.mark.slow
def test_killed_search_resumes_and_two_processes_share_one_study(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("stage1.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    runs = tmp_path / "runs"
    storage = f"sqlite:///{(runs / STUDY / 'study.db').resolve()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = subprocess.Popen(tune_command(runs, space), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    other = subprocess.Popen(tune_command(runs, space), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        # Synchronized on the first process's own log, no sleeps: it is killed inside its
        # second trial, when its first one is recorded COMPLETE.
        wait_for_second_trial(lines_of(killed.stderr))
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed_at = time.monotonic()
        assert [t for t in trials_now(storage) if t.state.name == "COMPLETE"
                and t.user_attrs.get("worker", "").endswith(f"pid {killed.pid}")]
        before_kill = {t.number: Path(t.user_attrs["run_dir"], "evaluation.json").stat().st_mtime_ns
                       for t in trials_now(storage) if t.state.name == "COMPLETE"}
        # The rerun comes after the killed trial's heartbeat went stale (3 heartbeats of 1 s,
        # +2 s for the database clock's whole seconds): inside that window it is still alive
        # to any process, by the contract.
        time.sleep(max(0.0, killed_at + 5.0 - time.monotonic()))
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
    assert [t for t in trials if t.state.name == "FAIL" and t.user_attrs["worker"].endswith(f"pid {killed.pid}")]
    # Both concurrent processes added trials to the one study (and so did the rerun).
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) >= 2 and f"pid {other.pid}" in " ".join(workers)
    assert (runs / STUDY / "trials.csv").is_file() and (runs / STUDY / "best_config.yaml").is_file()
    assert "trial" in out and "best localization_accuracy" in out


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_a_search_with_nothing_left_to_do_still_fails_a_dead_trial(tmp_path):
    """A process killed mid-trial leaves it RUNNING; Optuna fails stale trials only when a
    process starts a new one. A rerun whose target is already met starts none: it must still
    fail the dead trial (and enqueue its retry) rather than leave it RUNNING for ever."""
    from detseg.training import tuning

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1,
                                         grace_period=1)
    study = optuna.create_study(storage=storage, study_name="dead", direction="maximize")
    for value in (0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    dead = study.ask()
    tuning.record_heartbeat(dead)  # its process wrote one heartbeat, then was killed
    deadline = time.monotonic() + 30.0
    while not storage._get_stale_trial_ids(study._study_id):  # the database clock has whole seconds
        assert time.monotonic() < deadline, "the trial never went stale"
        time.sleep(0.2)
    tuning.run_until(study, plan=None, total=2)  # two finished: nothing to run
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert states[dead.number] == "FAIL"
    assert "RUNNING" not in states.values()
