"""`detseg train` and `detseg pretrain`.

    detseg train (CONFIG.yaml | NAME) [key=value ...] [--strategy default|mirrored|multiworker] [--restart]
    detseg pretrain --data (COCO.json | class-folders/) --backbone NAME --image-size S \\
                    --epochs E --out backbone.weights.h5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STRATEGY_CHOICES = ("default", "mirrored", "multiworker")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model from a YAML config or a packaged config name (two-stage transfer learning)",
        description="Train a model from a YAML config file, or from the name of a config that ships "
                    "with detseg (e.g. `detseg train yolo_synthetic`, `detseg train smoke/yolo`). "
                    "Rerunning the same command continues an interrupted run from its last checkpoint.")
    p.add_argument("config", metavar="CONFIG",
                   help="a YAML config file (e.g. configs/clsloc_synthetic.yaml) or a packaged config "
                        "name (e.g. yolo_synthetic, smoke/yolo; an unknown name lists the packaged ones)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. stage1.epochs=3 model.backbone=tiny")
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default=None,
                   help="tf.distribute strategy (default: the config's `strategy`); multiworker "
                        "reads the cluster from TF_CONFIG")
    p.add_argument("--restart", action="store_true",
                   help="discard the run directory's checkpoints and train from the start")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "pretrain", help="pretrain a backbone as a classifier on local data; save its weights",
        description="Train a backbone as an image classifier on object crops of a COCO dataset or a "
                    "folder-per-class image set, and save the backbone weights for "
                    "`model.weights: <out>` (transfer learning with no internet).")
    p.add_argument("--data", type=Path, required=True, help="COCO instances JSON, or a folder per class")
    p.add_argument("--images", type=Path, default=None, help="image folder of the COCO file (default: guessed)")
    p.add_argument("--backbone", required=True, help="backbone name, e.g. tiny, mobilenet_v2, resnet50")
    p.add_argument("--image-size", type=int, required=True, help="crop size in pixels (a multiple of 32)")
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (tiny, mobilenet_v2)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="weights file to write, ending in .weights.h5")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_pretrain)


def _train(args: argparse.Namespace) -> int:
    from detseg.workflows.train import train_model

    result = train_model(args.config, args.overrides, strategy=args.strategy, restart=args.restart,
                         verbose=0 if args.quiet else None, log=_stderr)
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None}
    print(json.dumps({"run_dir": str(result.run_dir), **summary}, indent=2))
    return 0


def _stderr(message: str) -> None:
    print(f"detseg train: {message}", file=sys.stderr, flush=True)


def _pretrain(args: argparse.Namespace) -> int:
    from detseg.training.callbacks import progress_verbosity
    from detseg.training.pretrain import pretrain_backbone

    result = pretrain_backbone(args.data, args.backbone, args.image_size, args.epochs, args.out,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                               image_dir=args.images, alpha=args.alpha, verbose=progress_verbosity())
    accuracy = "n/a" if result.val_accuracy is None else f"{result.val_accuracy:.3f}"
    print(f"wrote {result.weights_path} ({args.backbone}, {len(result.class_names)} classes, "
          f"{result.num_samples} samples, val accuracy {accuracy}); use it with "
          f"`model.weights={result.weights_path}`")
    return 0
