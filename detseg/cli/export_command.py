"""`detseg export RUN_DIR --model-base-path PATH`: a trained run as a TF Serving SavedModel.

Parses the arguments and calls `detseg.workflows.export.export_run`, which wraps the run's
final model (any family) with `serving.serving_module.serving_module_for` and writes it
atomically as `PATH/<version>/` with a `models.config` beside `PATH`. The run directory,
the base path and the version are checked before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detseg.cli.arguments import int_at_least, output_folder, run_directory
from detseg.workflows.export import export_run  # loads nothing heavy until called


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained run as a SavedModel for TF Serving",
                              description="Export a finished run's final model as PATH/<version>/, the "
                                          "layout TensorFlow Serving (and `detseg serve`) loads.")
    p.add_argument("run_dir", type=run_directory, metavar="RUN_DIR",
                   help="a finished run directory (runs/<name>, holding model.keras)")
    p.add_argument("--model-base-path", type=output_folder, required=True,
                   help="the model's base folder; versions go in numbered sub-folders")
    p.add_argument("--model-name", default=None, help="name in models.config (default: the run's name)")
    p.add_argument("--version", type=int_at_least(1), default=None,
                   help="version number (default: the next free one); an existing version is an error")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    taken = args.version is not None and (args.model_base_path / str(args.version)).exists()
    if taken:
        raise ValueError(f"--version {args.version}: {args.model_base_path / str(args.version)} already exists "
                         f"(versions are never overwritten; leave --version out for the next free one)")
    path = export_run(args.run_dir, args.model_base_path, args.model_name, args.version)
    name = args.model_name or Path(args.run_dir).resolve().name
    print(f"exported {args.run_dir} -> {path}")
    print(f"serve it: detseg serve --model-name {name} --model-base-path {args.model_base_path}")
    return 0
