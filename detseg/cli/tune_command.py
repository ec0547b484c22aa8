"""`detseg tune`: hyperparameter search over config keys, as short training runs.

    detseg tune CONFIG --space SPACE.yaml --trials N [key=value ...] [--storage URL] [--study NAME]
                [--sampler random|tpe] [--refine] [--metric KEY] [--no-pruning]
"""

from __future__ import annotations

import argparse
import sys

from detseg.cli.arguments import existing_file, float_above, int_at_least
from detseg.cli.train_command import config_argument

SAMPLER_CHOICES = ("random", "tpe")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune", help="search hyperparameters: many short training runs, the best config as YAML",
        description="Random search (or TPE) over the config keys of a search space file, each trial a "
                    "short training run in <runs_dir>/<study>/trial_<n>, scored by the family's "
                    "validation metric; hopeless trials stop early. The study lives in a SQLite file "
                    "beside the runs (or --storage): rerunning the same command continues it. Writes "
                    "trials.csv, best_config.yaml (for `detseg train`) and one plot per searched key.")
    p.add_argument("config", metavar="CONFIG", type=config_argument,
                   help="a YAML config file or a packaged config name (e.g. smoke/clsloc)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides applied to every trial, e.g. stage2.epochs=3")
    p.add_argument("--space", type=existing_file, required=True,
                   help="search space YAML: {config.key: {log_uniform|uniform|int: [low, high]} "
                        "or {choice: [a, b, ...]}}")
    p.add_argument("--trials", type=int_at_least(1), required=True,
                   help="finished trials the study should hold (per round with --refine)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB storage URL, e.g. postgresql://host/db for several machines "
                        "(default: sqlite file <runs_dir>/<study>/study.db)")
    p.add_argument("--study", default=None, help="study name (default: the config's name)")
    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default="random",
                   help="random search, or TPE (model-based)")
    p.add_argument("--refine", action="store_true",
                   help="then a second round of --trials in <study>_refined, each range narrowed "
                        "around the best trials (coarse to fine)")
    p.add_argument("--metric", default=None,
                   help="evaluation key to optimize (default: the family's headline metric)")
    p.add_argument("--seed", type=int_at_least(0), default=None, help="sampler seed (default: the config's seed)")
    p.add_argument("--no-pruning", action="store_true", help="never stop a trial early")
    p.add_argument("--heartbeat", type=float_above(0.0), default=30.0,
                   help="seconds between a trial's heartbeats; a trial silent 3x as long "
                        "(its process was killed) is failed and re-run")
    p.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from detseg.workflows.tune import tune_model

    result = tune_model(args.config, args.space, args.trials, overrides=args.overrides, storage=args.storage,
                        study=args.study, sampler=args.sampler, refine=args.refine, seed=args.seed,
                        metric=args.metric, pruning=not args.no_pruning, heartbeat_s=args.heartbeat,
                        log=_stderr)
    print(result.table)
    print(f"trials: {result.trials_csv}")
    if result.best_config_path is not None:
        print(f"best {result.metric} = {result.best_value:.4g}: {result.best_config_path} "
              f"(detseg train {result.best_config_path})")
    for plot in result.plots:
        print(f"plot: {plot}")
    return 0


def _stderr(message: str) -> None:
    print(f"detseg tune: {message}", file=sys.stderr, flush=True)
