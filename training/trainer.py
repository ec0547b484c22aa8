"""`train(config)`: strategy -> data -> stage 1 -> stage 2 -> final model and its evaluation.

    from detseg.training.config import load_config
    from detseg.training.trainer import train
    result = train(load_config("configs/clsloc_synthetic.yaml", ["stage2.epochs=2"]))
    print(result.metrics)

Running the same config again continues the run in `runs/<name>/` where it stopped (after
a crash, kill -9 included); a finished run is not retrained. `restart=True` discards the
run directory's checkpoints first (the feature cache is kept: it is keyed by content).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf
# Op determinism has a public switch-on but no public switch-off or getter.
from tensorflow.python.framework import config as tf_framework_config

from detseg.models.backbones.weights import SAVED_WEIGHTS_SUFFIX
from detseg.training.callbacks import progress_verbosity
from detseg.training.config import ConfigError, TrainConfig, config_fingerprint, config_to_yaml
from detseg.training.config_schema import PRECISIONS
from detseg.training.ema import weights_description
from detseg.training.families import FAMILIES
from detseg.training.pretrain import pretrain_backbone
from detseg.training.run_directory import RunDirectory, RunState, resume_state
from detseg.training.strategy import build_strategy, is_chief
from detseg.training.training_data import resolve_training_data
from detseg.training.transfer_stages import (TrainingSession, check_monitor_is_logged, evaluate_model,
                                             final_model, run_stage1, run_stage2)


@dataclass(frozen=True)
class TrainResult:
    """Where the run lives, the final model's validation metrics, and the headline value."""

    run_dir: Path
    metrics: dict[str, Any]
    headline_metric: str
    resumed: bool


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras' dtype policy `precision` (`config.precision`) for the models built inside, then
    the thread's previous policy back, so later models of a notebook, script or test are not
    affected. Layers keep the policy they were built with (saved in their config, so a loaded
    model computes as it trained); heads end in float32 layers. `mixed_float16` models
    compile with a `keras.mixed_precision.LossScaleOptimizer` (Keras wraps the optimizer of
    a model built under that policy)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"config key 'precision' must be one of {list(PRECISIONS)}, got {precision!r}")
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


@contextlib.contextmanager
def deterministic_ops(enabled: bool):
    """TF op determinism for one run (the same config gives the same weights run after run
    on CPU), then the process's previous setting back: it is process-wide, and while it is
    on Keras silently refuses `jit_compile=True` to every later model of a notebook or script."""
    was_on = tf_framework_config.is_op_determinism_enabled()
    if enabled and not was_on:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_on:
            tf_framework_config.disable_op_determinism()


def _stderr(message: str) -> None:
    print(f"detseg train: {message}", file=sys.stderr, flush=True)


def train(config: TrainConfig, restart: bool = False, verbose: int | None = None,
          log: Callable[[str], None] = _stderr, callbacks: Sequence = ()) -> TrainResult:
    """Trains `config` in its run directory; returns the final validation metrics.

    `callbacks`: extra Keras callbacks for every stage's `fit`, run after the run's own
    (they see each epoch's logs, the task metric included, e.g. a tuning trial's pruning).
    """
    with deterministic_ops(config.deterministic), precision_policy(config.precision):
        return _train(config, restart, verbose, log, tuple(callbacks))


def _train(config: TrainConfig, restart: bool, verbose: int | None, log: Callable[[str], None],
           callbacks: tuple) -> TrainResult:
    strategy = build_strategy(config.strategy)  # first: MultiWorkerMirroredStrategy needs that
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TF
    family = FAMILIES[config.model.family]
    check_monitor_is_logged(config, family.task)
    data = resolve_training_data(config)
    run_dir = RunDirectory(config.run_dir, writable=is_chief(strategy))
    state = resume_state(run_dir, config_fingerprint(config), restart)
    resumed = state.epochs_done > 0 or state.stage > 1
    run_dir.write_text(run_dir.config_path, config_to_yaml(config))
    run_dir.write_label_map(data.label_map)
    verbose = progress_verbosity() if verbose is None else verbose
    config = with_pretrained_backbone(config, data, run_dir, verbose, log)
    session = TrainingSession(config, family, data, run_dir, strategy, log, verbose, callbacks)
    log(f"run {run_dir.root}: {config.model.family} on {config.model.backbone} at "
        f"{config.model.image_size} px, {len(data.train.images)} train / {len(data.val.images)} val "
        f"images, {strategy.num_replicas_in_sync} replica(s) ({config.strategy})")
    if config.ema.enabled:
        log(f"weights: {weights_description(config.ema)}; validation, checkpoints, the final model "
            f"and its export use the averaged weights")
    if state.run_done and run_dir.evaluation_path.is_file():
        log("this run is already complete; pass --restart to train it again")
        return _result(run_dir, family.headline_metric, resumed=True)
    state = _train_stages(session, state)
    model = final_model(session, last_stage=2 if config.stage2.epochs > 0 else 1)
    run_dir.save_model(model)
    metrics = evaluate_model(session, model)
    if config.ema.enabled:
        metrics["weights"] = weights_description(config.ema)  # which weights were evaluated
    run_dir.write_json(run_dir.evaluation_path, metrics)
    run_dir.write_state(replace(state, run_done=True))
    scored = metrics.get("num_samples", metrics.get("num_images", len(data.val.images)))
    log(f"done: {family.headline_metric} = {_formatted(metrics.get(family.headline_metric))} on "
        f"{scored} val images; model in {run_dir.model_path}")
    return TrainResult(run_dir.root, metrics, family.headline_metric, resumed)


def with_pretrained_backbone(config: TrainConfig, data, run_dir: RunDirectory, verbose: int,
                             log: Callable[[str], None]) -> TrainConfig:
    """Stage 0 (`pretrain.epochs` > 0): the config with `model.weights` set to a backbone
    pretrained on object crops of the train split; pretrained once, reused on resume."""
    if config.pretrain.epochs <= 0:
        return config
    weights = run_dir.pretrain_dir / f"backbone{SAVED_WEIGHTS_SUFFIX}"
    if not weights.is_file():
        # Into a temporary folder renamed into place: a crash never leaves half a file. A
        # worker that does not write the run directory keeps its own (identical) copy.
        parent = run_dir.root if run_dir.writable else Path(tempfile.mkdtemp(prefix="detseg-pretrain-"))
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pretrain-", dir=parent))
        pretrain = config.pretrain
        log(f"stage 0: pretraining {config.model.backbone} on object crops of {data.train.source}")
        pretrain_backbone(data.train.source, config.model.backbone, pretrain.image_size, pretrain.epochs,
                          staging / weights.name, batch_size=pretrain.batch_size, lr=pretrain.lr,
                          seed=config.seed, image_dir=data.train.image_dir, alpha=config.model.alpha,
                          verbose=verbose, log=log)
        if not run_dir.writable:
            weights = staging / weights.name
        else:
            shutil.rmtree(run_dir.pretrain_dir, ignore_errors=True)  # an earlier, unfinished attempt
            os.replace(staging, run_dir.pretrain_dir)
    log(f"stage 0: starting from the pretrained backbone {weights}")
    return replace(config, model=replace(config.model, weights=str(weights)))


def _train_stages(session: TrainingSession, state: RunState) -> RunState:
    config = session.config
    if state.stage == 1 and not state.stage_done and config.stage1.epochs > 0:
        state = run_stage1(session, state)
    if config.stage2.epochs > 0:
        if state.stage == 1:
            state = state.next_stage(2)
            session.run_dir.write_state(state)
        if not state.stage_done:
            state = run_stage2(session, state)
    return state


def _result(run_dir: RunDirectory, headline: str, resumed: bool) -> TrainResult:
    import json

    metrics = json.loads(run_dir.evaluation_path.read_text(encoding="utf-8"))
    return TrainResult(run_dir.root, metrics, headline, resumed)


def _formatted(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
