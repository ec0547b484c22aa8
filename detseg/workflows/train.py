"""Train workflow: a config (file, packaged name or `TrainConfig`) with overrides -> a finished run.

    result = train_model("smoke/yolo", ["runs_dir=/tmp/runs", "stage2.epochs=1"])
    result.run_dir, result.metrics[result.headline_metric]

`detseg train` only parses its arguments and calls `train_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from detseg.training.config import TrainConfig, config_from_mapping, load_config, with_strategy
from detseg.training.dataclass_yaml import ConfigError, apply_overrides, parse_overrides, to_mapping
from detseg.training.trainer import TrainResult, train

Log = Callable[[str], None]


def resolve_train_config(config: str | os.PathLike | TrainConfig, overrides: Sequence[str] = (),
                         strategy: str | None = None) -> TrainConfig:
    """The `TrainConfig` that `config` names, `key=value` overrides applied, checked.

    `config`: a YAML path, a packaged config name (`yolo_synthetic`, `smoke/yolo`) or a
    `TrainConfig`. `strategy` (default | mirrored | multiworker) replaces the config's.
    """
    if isinstance(config, TrainConfig):
        if overrides:
            raw = apply_overrides(to_mapping(config), parse_overrides(list(overrides)))
            try:
                config = config_from_mapping(raw)
            except ConfigError as e:
                raise ConfigError(f"config {config.name!r} with overrides: {e}") from None
    elif isinstance(config, (str, Path, os.PathLike)):
        config = load_config(config, list(overrides))
    else:
        raise TypeError(f"config must be a path, a packaged config name or a TrainConfig, "
                        f"got {type(config).__name__}")
    return with_strategy(config, strategy)


def train_model(config: str | os.PathLike | TrainConfig, overrides: Sequence[str] = (), *,
                strategy: str | None = None, restart: bool = False, verbose: int | None = None,
                log: Log | None = None, callbacks: Sequence = ()) -> TrainResult:
    """Train `config` (see `resolve_train_config`) in its run directory; returns the result.

    Running it again continues an interrupted run (a finished one is not retrained);
    `restart` discards the run's checkpoints first. `verbose`: Keras' progress output
    (None: a bar on a terminal, one line per epoch otherwise; 0: none). `log` receives
    one line per step of the run (None: no messages). `callbacks`: extra Keras callbacks
    for every stage's `fit`, after the run's own (they see the epoch's task metric).
    """
    resolved = resolve_train_config(config, overrides, strategy)
    return train(resolved, restart=restart, verbose=verbose, log=log or _quiet, callbacks=callbacks)


def _quiet(message: str) -> None:
    """A `log` that drops the message."""
