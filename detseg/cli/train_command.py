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

from detseg.cli.arguments import existing_folder, existing_path, float_above, int_at_least

STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
CONFIG_SUFFIXES = (".yaml", ".yml")
WEIGHTS_SUFFIX = ".weights.h5"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model from a YAML config or a packaged config name (two-stage transfer learning)",
        description="Train a model from a YAML config file, or from the name of a config that ships "
                    "with detseg (e.g. `detseg train yolo_synthetic`, `detseg train smoke/yolo`). "
                    "Rerunning the same command continues an interrupted run from its last checkpoint.")
    p.add_argument("config", metavar="CONFIG", type=config_argument,
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
    p.add_argument("--data", type=existing_path, required=True, help="COCO instances JSON, or a folder per class")
    p.add_argument("--images", type=existing_folder, default=None,
                   help="image folder of the COCO file (default: guessed)")
    p.add_argument("--backbone", required=True, help="backbone name, e.g. tiny, mobilenet_v2, resnet50")
    p.add_argument("--image-size", type=int_at_least(32), required=True,
                   help="crop size in pixels (a multiple of 32)")
    p.add_argument("--alpha", type=float_above(0.0), default=1.0, help="width multiplier (tiny, mobilenet_v2)")
    p.add_argument("--epochs", type=int_at_least(1), required=True, help="passes over the crops")
    p.add_argument("--out", type=weights_file, required=True, help="weights file to write, ending in .weights.h5")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="crops per training step")
    p.add_argument("--lr", type=float_above(0.0), default=1e-3, help="learning rate (Adam)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the split, shuffling and weights")
    p.set_defaults(func=_pretrain)


def config_argument(text: str) -> str:
    """A config file (checked here, before TensorFlow loads) or a packaged config's name
    (looked up by the config loader, which lists the packaged ones when it is unknown)."""
    path = Path(text)
    if path.suffix in CONFIG_SUFFIXES and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such config file" if not path.exists()
                                         else f"{text}: is a folder, not a config file")
    return text


def weights_file(text: str) -> Path:
    """Where `detseg pretrain` writes: a `.weights.h5` name (Keras' rule) in a folder or a new one."""
    path = Path(text)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise argparse.ArgumentTypeError(f"{text}: the weights file name must end in {WEIGHTS_SUFFIX}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name ending in {WEIGHTS_SUFFIX}")
    return path


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
