"""Tune workflow: a config + a search space file -> a study of short training runs, its best config.

    result = tune_model("smoke/clsloc", "space.yaml", trials=20, overrides=["runs_dir=/tmp/runs"])
    result.best_config_path, result.table

Everything lands in `<runs_dir>/<study>/`: the SQLite study (`study.db`, unless `storage`
names a database server), one run directory per trial (`trial_<n>/`), `trials.csv`,
`best_config.yaml` (what `detseg train` takes as it is) and one plot per searched key.
Running the same call again continues the study: finished trials are kept, the missing
ones are added. `detseg tune` only parses its arguments and calls `tune_model`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from detseg.core.atomic_files import write_text_atomic
from detseg.training.config import TrainConfig, config_from_mapping, config_to_yaml
from detseg.training.dataclass_yaml import ConfigError, apply_overrides, to_mapping
from detseg.training.search_space import SearchSpace, check_against_config, load_space, parse_space, refined
from detseg.workflows.train import resolve_train_config

Log = Callable[[str], None]
STUDY_FILE = "study.db"
REFINED_SUFFIX = "_refined"


@dataclass(frozen=True)
class TuneResult:
    """The study's folder and outputs; `table` is the printed trials table."""

    study_dir: Path
    study_names: tuple[str, ...]
    metric: str
    best_value: float | None
    best_params: dict
    best_config_path: Path | None
    trials_csv: Path
    plots: tuple[Path, ...]
    table: str


def tune_model(config: str | os.PathLike | TrainConfig, space: str | os.PathLike | dict, trials: int, *,
               overrides: Sequence[str] = (), storage: str | None = None, study: str | None = None,
               sampler: str = "random", refine: bool = False, seed: int | None = None,
               metric: str | None = None, pruning: bool = True, heartbeat_s: float = 30.0,
               enqueue: Sequence[Mapping[str, Any]] = (), log: Log | None = None) -> TuneResult:
    """Search `space` (a YAML file or its mapping) around `config` with `trials` finished trials.

    `refine`: a second round of `trials` more in a study `<study>_refined`, each numeric
    range narrowed around the best quarter of the first round (log ranges in log space).
    `metric`: a key of the family's evaluation (default: its headline metric; maximized
    unless it is a loss). `heartbeat_s`: a trial whose process is silent 3x this long is
    failed and re-run. `enqueue`: parameter sets (`{key: value}`, keys of the space) the
    first round tries before it samples (Optuna's `enqueue_trial`; a set already in the
    study is not added again, so a rerun does not repeat them). Every key of the space is
    checked against the config first, and every enqueued key against the space.
    """
    from detseg.training import tuning, tuning_report

    log = log or (lambda message: None)
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    base_config = resolve_train_config(config, overrides)
    search = load_space(space) if isinstance(space, (str, Path, os.PathLike)) else parse_space(space)
    base = to_mapping(base_config)
    check_against_config(search, base, config_from_mapping)
    _check_enqueued(enqueue, search)
    family = tuning.family_of(base)
    metric = metric or _headline(family)
    name = study or base_config.name
    study_dir = Path(base_config.runs_dir) / name
    url = storage or f"sqlite:///{(study_dir / STUDY_FILE).resolve()}"
    study_dir.mkdir(parents=True, exist_ok=True)
    direction = tuning.metric_direction(metric)
    seed = base_config.seed if seed is None else seed

    def round_of(study_name: str, round_space: SearchSpace) -> "tuning.optuna.Study":
        monitor = tuning.epoch_metric(family, metric)
        plan = tuning.TrialPlan(_trial_base(base_config, Path(base_config.runs_dir) / study_name,
                                            monitor if pruning else None),
                                round_space, metric, monitor, pruning, log)
        opened = tuning.open_study_retrying(url, study_name, direction, sampler, seed, pruning, heartbeat_s)
        for params in (enqueue if round_space is search else ()):
            opened.enqueue_trial(dict(params), skip_if_exists=True)
        log(f"study {study_name} in {url}: {tuning.finished_count(opened)} of {trials} trials finished; "
            f"{sampler} sampler, pruning on {monitor if pruning else 'off'}")
        tuning.run_until(opened, plan, trials)
        return opened

    studies = [round_of(name, search)]
    if refine:
        narrowed = _refined_space(studies[0], search, trials)
        log("refined space: " + "; ".join(f"{d.key} {d.describe()}" for d in narrowed.distributions))
        studies.append(round_of(name + REFINED_SUFFIX, narrowed))
    rows = [row for s in studies for row in tuning_report.trial_rows(s)]
    rows = tuning_report.trial_rows_sorted(rows, direction)
    csv_path = study_dir / "trials.csv"
    tuning_report.write_trials_csv(csv_path, rows, metric, search.keys)
    plots = tuning_report.plot_metric_against_params(study_dir, rows, metric, search)
    best = next((r for r in rows if r.state == "COMPLETE"), None)
    best_path = None
    if best is not None:
        best_config = config_from_mapping(apply_overrides(base, [*best.params.items(),
                                                                 ("name", f"{name}_best")]))
        best_path = study_dir / "best_config.yaml"
        write_text_atomic(config_to_yaml(best_config), best_path)
    table = tuning_report.format_table(rows, metric, search.keys)
    return TuneResult(study_dir, tuple(s.study_name for s in studies), metric,
                      None if best is None else best.value, {} if best is None else dict(best.params),
                      best_path, csv_path, tuple(plots), table)


def _headline(family: str) -> str:
    from detseg.training.families import FAMILIES

    return FAMILIES[family].headline_metric


def _trial_base(config: TrainConfig, study_dir: Path, monitor: str | None) -> dict:
    """The base config of every trial: runs under `study_dir`, one feature cache shared by
    the trials (its entries are keyed by content), and the task metric every epoch when
    pruning follows it (`monitor`; None: no pruning)."""
    stage1 = config.stage1
    if stage1.cache_dir is None:
        stage1 = replace(stage1, cache_dir=str(study_dir / "feature_cache"))
    evaluation = config.eval
    if monitor not in (None, "val_loss") and evaluation.every != 1:
        evaluation = replace(evaluation, every=1)
    return to_mapping(replace(config, runs_dir=str(study_dir), stage1=stage1, eval=evaluation))


def _check_enqueued(enqueue: Sequence[Mapping[str, Any]], space: SearchSpace) -> None:
    """Every enqueued key must be searched (Optuna would silently sample the others)."""
    for number, params in enumerate(enqueue, start=1):
        unknown = sorted(set(params) - set(space.keys))
        if unknown:
            raise ConfigError(f"enqueued parameter set {number}: {', '.join(map(repr, unknown))} "
                              f"not in {space.source} (searched: {', '.join(space.keys)})")


def _refined_space(first_round, space: SearchSpace, trials: int) -> SearchSpace:
    """The space narrowed around the best quarter (at least two) of the first round's trials."""
    from detseg.training.tuning_report import trial_rows

    complete = [r for r in trial_rows(first_round) if r.state == "COMPLETE"]
    if not complete:
        raise ConfigError(f"study {first_round.study_name}: no completed trial to refine around")
    best = complete[:max(2, len(complete) // 4)]
    return refined(space, [r.params for r in best])
