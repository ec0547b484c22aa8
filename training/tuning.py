"""Hyperparameter search on Optuna's engine: studies in an RDB (SQLite by default), trials as runs.

Each trial is one `training.trainer.train` run in its own run directory
(`<study dir>/trial_<n>`), its config = the base config with the trial's sampled values,
scored by the family's validation metric. The study (trials, parameters, values, states)
lives in Optuna's RDB storage, so a killed search resumes where it stopped and several
processes (or machines, with a database server) add trials to one study. Stale trials
(their process died: no heartbeat for 3 heartbeats) are marked failed and re-run with the
same parameters. Hopeless trials stop early: the task metric on val, per epoch, goes to
Optuna's median pruner.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras
import optuna

from detseg.training.callbacks import TrainingDivergedError
from detseg.training.config import config_from_mapping
from detseg.training.dataclass_yaml import apply_overrides
from detseg.training.families import FAMILIES
from detseg.training.search_space import Distribution, SearchSpace
from detseg.training.trainer import train

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SAMPLERS = ("random", "tpe")
# A family's final metric -> its per-epoch twin in the epoch logs (`eval.every: 1`), per task.
EPOCH_METRICS = {
    "localization_accuracy": "val_loc_accuracy", "accuracy": "val_cls_accuracy",
    "bbox_AP50": "val_coco_AP50", "bbox_AP": "val_coco_AP", "segm_AP50": "val_coco_segm_AP50",
    "segm_AP": "val_coco_segm_AP",
}
EPOCH_METRICS_BY_TASK_FAMILY = {("clsloc", "mean_iou"): "val_box_mIoU", ("fcn", "mean_iou"): "val_mIoU",
                                ("unet", "mean_iou"): "val_mIoU"}


def metric_direction(metric: str) -> str:
    """Optuna's direction for a metric: loss-like names are minimized, everything else maximized."""
    return "minimize" if "loss" in metric else "maximize"


def epoch_metric(family: str, metric: str) -> str:
    """The epoch-log key that tracks `metric` during training (`val_loss` when none does)."""
    return EPOCH_METRICS_BY_TASK_FAMILY.get((family, metric), EPOCH_METRICS.get(metric, "val_loss"))


class TrialPruning(keras.callbacks.Callback):
    """Reports `monitor` from every epoch's logs to `trial` (steps count across both stages)
    and stops the run (`optuna.TrialPruned`) when the pruner calls it hopeless.

    `sign` is -1 when the study maximizes and `monitor` is a loss (e.g. `val_loss`)."""

    def __init__(self, trial: optuna.Trial, monitor: str, sign: float = 1.0):
        super().__init__()
        self.trial, self.monitor, self.sign = trial, monitor, sign
        self.step = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(self.sign * float(value), self.step)
        self.step += 1
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} = {float(value):.4g} after {self.step} epoch(s)")


def open_study(storage_url: str, study_name: str, direction: str, sampler: str, seed: int,
               pruning: bool, heartbeat_s: float) -> optuna.Study:
    """The study `study_name` in `storage_url`, created on first use, loaded afterwards."""
    engine = {"connect_args": {"timeout": 120}} if storage_url.startswith("sqlite") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log says what each trial did
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5 (since 2.8)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            storage_url, engine_kwargs=engine, heartbeat_interval=max(1, int(heartbeat_s)),
            grace_period=max(3, int(3 * heartbeat_s)),
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1) if pruning \
        else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                               sampler=build_sampler(sampler, seed), pruner=pruner, load_if_exists=True)


def open_study_retrying(*args, attempts: int = 5) -> optuna.Study:
    """`open_study`, again after a moment when another process was creating the same new
    database at the same time (both write its schema version: one of them fails)."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return open_study(*args)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)


def build_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """Random search by default (the notes' advice); TPE, model-based, on request.

    The random sampler is re-seeded per trial from `(seed, trial number)`: a resumed or a
    second process draws new values, not the first process's sequence again.
    """
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return PerTrialRandomSampler(seed)
    raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {kind!r}")


class PerTrialRandomSampler(optuna.samplers.RandomSampler):
    """`RandomSampler` whose draws for trial n depend on `(seed, n)` only."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._rng.rng.seed([self.seed, trial.number])


def suggest(trial: optuna.Trial, distribution: Distribution) -> Any:
    d = distribution
    if d.kind == "choice":
        return trial.suggest_categorical(d.key, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(d.key, int(d.low), int(d.high))
    return trial.suggest_float(d.key, float(d.low), float(d.high), log=d.is_log)


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a study shares: the base config (nested dicts, runs_dir and cache
    already pointing into the study folder), the space, the metric and its epoch twin."""

    base: Mapping[str, Any]
    space: SearchSpace
    metric: str
    monitor: str
    pruning: bool
    log: Callable[[str], None]


def objective_for(plan: TrialPlan, direction: str) -> Callable[[optuna.Trial], float]:
    """Optuna's objective: sample, train the trial's run, return its validation metric."""
    sign = -1.0 if (direction == "maximize") == ("loss" in plan.monitor) else 1.0

    def objective(trial: optuna.Trial) -> float:
        record_heartbeat(trial)
        params = {d.key: suggest(trial, d) for d in plan.space.distributions}
        config = config_from_mapping(apply_overrides(
            plan.base, [*params.items(), ("name", f"trial_{trial.number}")]))
        trial.set_user_attr("run_dir", str(config.run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()} pid {os.getpid()}")
        plan.log(f"trial {trial.number}: {params_text(params)}")
        callbacks = [TrialPruning(trial, plan.monitor, sign)] if plan.pruning else []
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            result = train(config, restart=True, verbose=0, log=lambda m: None, callbacks=callbacks)
        except TrainingDivergedError as e:
            trial.set_user_attr("note", f"diverged: {e}")
            raise optuna.TrialPruned(f"diverged: {e}") from None
        finally:
            trial.set_user_attr("cpu_s", round(time.process_time() - cpu, 2))
            trial.set_user_attr("wall_s", round(time.perf_counter() - wall, 2))
        value = result.metrics.get(plan.metric)
        if not isinstance(value, (int, float)):
            raise ValueError(f"trial {trial.number}: the evaluation has no number '{plan.metric}' "
                             f"(got {value!r}); numeric keys: "
                             f"{sorted(k for k, v in result.metrics.items() if isinstance(v, (int, float)))}")
        plan.log(f"trial {trial.number}: {plan.metric} = {value:.4g}")
        return float(value)

    return objective


def record_heartbeat(trial: optuna.Trial) -> None:
    """Writes the trial's first heartbeat now. Optuna's heartbeat thread writes it in parallel
    with the objective and may be held up by another process's lock on the database; a process
    killed before it lands leaves a trial with no heartbeat, which Optuna never calls stale."""
    storage = trial.storage  # Optuna wraps an RDBStorage in a cache that passes heartbeats on
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        storage.record_heartbeat(trial._trial_id)  # Optuna keeps the id private


def fail_stale_trials(study: optuna.Study) -> None:
    """Marks failed the trials whose process stopped sending heartbeats (and enqueues their
    retries). Optuna does this only when a process starts a trial; a search that has nothing
    left to do, or ends, does it here too, so a killed trial is not left RUNNING."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_until(study: optuna.Study, plan: TrialPlan, total: int) -> None:
    """Add trials until the study holds `total` finished (complete or pruned) ones.

    Other processes on the same study count too; a rerun after a kill adds only what is
    missing (the killed trial is failed by its missing heartbeat and re-run).
    """
    fail_stale_trials(study)
    missing = total - finished_count(study)
    if missing > 0:
        stop = optuna.study.MaxTrialsCallback(total, states=FINISHED)
        study.optimize(objective_for(plan, study.direction.name.lower()), n_trials=missing,
                       callbacks=[stop], gc_after_trial=True)
    fail_stale_trials(study)


def params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def family_of(base: Mapping[str, Any]) -> str:
    family = (base.get("model") or {}).get("family")
    if family not in FAMILIES:
        raise ValueError(f"unknown model.family {family!r}")
    return family
