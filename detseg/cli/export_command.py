"""`detseg export RUN_DIR --model-base-path PATH`: a trained run as a TF Serving SavedModel.

    detseg export runs/shapes --model-base-path exports/shapes
    detseg export --ensemble runs/a runs/b runs/c --model-base-path exports/shapes_ensemble

Parses the arguments and calls `detseg.workflows.export.export_run`, which wraps the run's
final model (any family) with `serving.serving_module.serving_module_for` and writes it
atomically as `PATH/<version>/` with a `models.config` beside `PATH`; with `--ensemble`,
`export_ensemble`: ONE SavedModel whose graph runs every run's model and merges their
predictions (`models.ensemble`), served with the same signatures and outputs. The run
directories, the base path and the version are checked before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detseg.cli.arguments import int_at_least, output_folder, run_directory
from detseg.workflows.export import export_ensemble, export_run  # load nothing heavy until called

MIN_ENSEMBLE_RUNS = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained run (or an ensemble of runs) as a SavedModel "
                                             "for TF Serving",
                              description="Export a finished run's final model, or one model merging several "
                                          "runs' (--ensemble), as PATH/<version>/, the layout TensorFlow "
                                          "Serving (and `detseg serve`) loads.")
    p.add_argument("run_dir", nargs="?", type=run_directory, default=None, metavar="RUN_DIR",
                   help="a finished run directory (runs/<name>, holding model.keras); leave it out with --ensemble")
    p.add_argument("--ensemble", nargs="+", type=run_directory, default=None, metavar="RUN_DIR",
                   help="two or more finished runs of one family, class list and image size, exported as ONE "
                        "model: detectors' boxes merged by weighted box fusion, segmentation and "
                        "classification+localization probabilities averaged (default: none, export RUN_DIR)")
    p.add_argument("--model-base-path", type=output_folder, required=True,
                   help="the model's base folder; versions go in numbered sub-folders")
    p.add_argument("--model-name", default=None,
                   help="name in models.config (default: the run's name; with --ensemble the base folder's name)")
    p.add_argument("--version", type=int_at_least(1), default=None,
                   help="version number (default: the next free one); an existing version is an error")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.ensemble is None):
        raise ValueError("give RUN_DIR or --ensemble RUN_DIR RUN_DIR ..., not both" if args.run_dir is not None
                         else "give RUN_DIR, or --ensemble RUN_DIR RUN_DIR ... to export an ensemble")
    if args.ensemble is not None and len(args.ensemble) < MIN_ENSEMBLE_RUNS:
        raise ValueError(f"--ensemble needs at least {MIN_ENSEMBLE_RUNS} run directories, got "
                         f"{len(args.ensemble)} (export a single run as RUN_DIR)")
    taken = args.version is not None and (args.model_base_path / str(args.version)).exists()
    if taken:
        raise ValueError(f"--version {args.version}: {args.model_base_path / str(args.version)} already exists "
                         f"(versions are never overwritten; leave --version out for the next free one)")
    if args.ensemble is not None:
        path = export_ensemble(args.ensemble, args.model_base_path, args.model_name, args.version)
        name = args.model_name or Path(args.model_base_path).resolve().name
        print(f"exported the ensemble of {', '.join(str(run) for run in args.ensemble)} -> {path}")
    else:
        path = export_run(args.run_dir, args.model_base_path, args.model_name, args.version)
        name = args.model_name or Path(args.run_dir).resolve().name
        print(f"exported {args.run_dir} -> {path}")
    print(f"serve it: detseg serve --model-name {name} --model-base-path {args.model_base_path}")
    return 0
