"""`detseg export RUN_DIR --model_base_path PATH`: a trained run as a TF Serving SavedModel.

Parses the arguments and calls `detseg.workflows.export.export_run`, which wraps the run's
final model (any family) with `serving.serving_module.serving_module_for` and writes it
atomically as `PATH/<version>/` with a `models.config` beside `PATH`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detseg.workflows.export import export_run  # loads nothing heavy until called


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained run as a SavedModel for TF Serving")
    p.add_argument("run_dir", type=Path, help="a finished run directory (runs/<name>)")
    p.add_argument("--model_base_path", type=Path, required=True,
                   help="the model's base folder; versions go in numbered sub-folders")
    p.add_argument("--model_name", default=None, help="name in models.config (default: the run's name)")
    p.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    path = export_run(args.run_dir, args.model_base_path, args.model_name, args.version)
    name = args.model_name or Path(args.run_dir).resolve().name
    print(f"exported {args.run_dir} -> {path}")
    print(f"serve it: detseg serve --model_name {name} --model_base_path {args.model_base_path}")
    return 0
