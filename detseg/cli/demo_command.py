"""`detseg demo`: the main job on the embedded synthetic dataset, step by step.

Parses `--out` and `--seed` and calls `detseg.workflows.demo.run_demo`, which prints
each step (data, augmentation, cls+loc and YOLO on an ImageNet EfficientNet-Lite0,
COCO report, export, serving, predictions) as it goes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detseg.cli.arguments import int_at_least, output_folder

DEMO_SEED = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the synthetic dataset",
                              description="Synthesize, validate, augment, train (cls+loc and YOLO on an "
                                          "ImageNet EfficientNet-Lite0), evaluate, export, serve and "
                                          "predict, step by step; a rerun reuses the dataset and the "
                                          "finished runs.")
    p.add_argument("--out", type=output_folder, default=Path("demo_out"), help="folder for everything the demo writes")
    p.add_argument("--seed", type=int_at_least(0), default=DEMO_SEED,
                   help="seed of the dataset, augmentation and training")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from detseg.workflows.demo import run_demo as run

    return run(args.out, args.seed)
