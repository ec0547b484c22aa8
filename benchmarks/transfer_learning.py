"""What each transfer-learning stage buys: cls+loc accuracy after the same CPU time.

    .venv/bin/python benchmarks/transfer_learning.py --minutes 3
    .venv/bin/python benchmarks/transfer_learning.py --minutes 1 --num-images 300   # quick look

On the synthetic shapes set (`data.synthetic`), classification + localization of each
image's largest object, tiny backbone, three ways, each given the same budget of

    budget = --minutes * 60 * cores  CPU-seconds of this process

(CPU time, not wall-clock, so the comparison stays fair on a shared machine):

(a) from scratch: random backbone + head, everything trained (BatchNorm included);
(b) bottleneck only: the pretrained backbone, frozen, runs once over the train images
    (that pass counts against the budget), then the head trains on the cached features;
(c) bottleneck then fine-tuning: (b) for `--stage1-share` of the budget, then the top
    `--unfreeze` blocks train with the head (BatchNorm frozen) at a 10x lower rate;
(d) as (c), BatchNorm of the unfrozen blocks trained too (`stage2.batchnorm: train`).

The data is the single-object variant of the synthetic set by default (`--max-shapes 1
--min-shape-size 0.15`, as `configs/clsloc_synthetic.yaml`); `--max-shapes 6
--min-shape-size 0.04` is the default multi-object set.

The pretrained backbone comes from `detseg pretrain` on object crops of the TRAIN split
(`training.pretrain.pretrain_backbone`; not counted in the budget), or from `--pretrained`.
Every variant is scored by `training.clsloc_family.evaluate` (evaluation's metrics) on the
val split. Prints one table; writes it as JSON to `--out/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from detseg.core.contract import CLASSIFICATION_LOCALIZATION  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.models.backbones.registry import build_backbone, feature_shape  # noqa: E402
from detseg.models.backbones.transfer import freeze, unfreeze_top_blocks  # noqa: E402
from detseg.pipelines.augment import AugmentConfig  # noqa: E402
from detseg.pipelines.dataset import build_dataset, build_eval_dataset  # noqa: E402
from detseg.training.clsloc_family import ClsLocHeadConfig, build_head, build_model, evaluate  # noqa: E402
from detseg.training.feature_cache import CachedFeatures, extract_features  # noqa: E402
from detseg.training.pretrain import pretrain_backbone  # noqa: E402
from detseg.training.transfer_stages import feature_batches  # noqa: E402

BACKBONE = "tiny"
TASK = CLASSIFICATION_LOCALIZATION
MANY_EPOCHS = 100_000  # fit runs until the CPU budget callback stops it
FINE_TUNE_LR_FACTOR = 0.1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuBudget(keras.callbacks.Callback):
    """Stops `fit` once this process has used `deadline` CPU-seconds in total."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if cpu_seconds() >= self.deadline:
            self.model.stop_training = True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock minutes per variant on an idle machine")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--max-shapes", type=int, default=1, help="most shapes per synthetic image")
    parser.add_argument("--min-shape-size", type=float, default=0.15, help="smallest shape, fraction of the side")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--unfreeze", default="all", help="blocks fine-tuned in (c): a number or 'all'")
    parser.add_argument("--stage1-share", type=float, default=0.3, help="share of (c)'s budget for its stage 1")
    parser.add_argument("--pretrained", type=Path, default=None, help="a backbone .weights.h5 (default: pretrain one)")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_transfer"))
    return parser.parse_args()


class Bench:
    """Datasets, head options and the budget shared by the three variants."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        paths = ensure_synthetic(args.out / "synthetic", num_images=args.num_images, image_size=args.image_size,
                                 max_shapes=args.max_shapes, min_shape_size=args.min_shape_size)
        self.train, self.val = load_coco(paths["train"]), load_coco(paths["val"])
        self.paths = paths
        self.head_config = ClsLocHeadConfig(hidden_units=128, dropout=0.1)
        self.budget = args.minutes * 60 * (os.cpu_count() or 1)
        self.size = args.image_size

    def batches(self, augment: bool):
        return build_dataset(self.train, TASK, self.size, self.args.batch_size,
                             augment=AugmentConfig(crop=0.0, blur=0.0) if augment else None,
                             shuffle=True, seed=0)

    def val_batches(self):
        return build_dataset(self.val, TASK, self.size, self.args.batch_size)

    def backbone(self, weights):
        keras.utils.set_random_seed(0)
        return build_backbone(BACKBONE, (self.size, self.size), None if weights is None else str(weights))

    def head(self, backbone):
        keras.utils.set_random_seed(1)
        return build_head({"P5": feature_shape(backbone, "P5")}, self.train.label_map.num_classes, self.head_config)

    def fit(self, model, batches, lr: float, deadline: float) -> int:
        model.compile(keras.optimizers.Adam(lr))
        budget = CpuBudget(deadline)
        model.fit(batches, epochs=MANY_EPOCHS, callbacks=[budget], verbose=0)
        return budget.steps

    def score(self, model) -> dict:
        eval_batches = build_eval_dataset(self.val, TASK, self.size, self.args.batch_size, with_targets=True)
        return evaluate(model, eval_batches, self.train.label_map)


def from_scratch(bench: Bench) -> dict:
    start = cpu_seconds()
    backbone = bench.backbone(None)
    model = build_model(backbone, bench.head(backbone), bench.head_config, bench.size)
    steps = bench.fit(model, bench.batches(augment=True), bench.args.lr, start + bench.budget)
    return {"steps": steps, "cpu_s": cpu_seconds() - start, **bench.score(model)}


def bottleneck(bench: Bench, weights: Path, share: float = 1.0) -> tuple[dict, keras.Model, keras.Model]:
    start = cpu_seconds()
    backbone = bench.backbone(weights)
    freeze(backbone)
    features, targets = extract_features(backbone, build_dataset(bench.train, TASK, bench.size, 32), ("P5",))
    cached = CachedFeatures(features, targets, key="in-memory")
    head = bench.head(backbone)
    head_model = build_model(None, head, bench.head_config, bench.size)
    steps = bench.fit(head_model, feature_batches(cached, ("P5",), bench.args.batch_size, True, 0),
                      bench.args.lr, start + bench.budget * share)
    model = build_model(backbone, head, bench.head_config, bench.size)
    return {"steps": steps, "cpu_s": cpu_seconds() - start}, model, backbone


def bottleneck_then_fine_tune(bench: Bench, weights: Path, train_batchnorm: bool = False) -> dict:
    start = cpu_seconds()
    stage1, model, backbone = bottleneck(bench, weights, share=bench.args.stage1_share)
    unfreeze = bench.args.unfreeze if bench.args.unfreeze == "all" else int(bench.args.unfreeze)
    unfreeze_top_blocks(backbone, unfreeze, train_batchnorm=train_batchnorm)
    steps = bench.fit(model, bench.batches(augment=True), bench.args.lr * FINE_TUNE_LR_FACTOR,
                      start + bench.budget)
    return {"steps": stage1["steps"] + steps, "stage1_steps": stage1["steps"],
            "cpu_s": cpu_seconds() - start, **bench.score(model)}


def main() -> None:
    args = parse_args()
    tf.config.experimental.enable_op_determinism()
    bench = Bench(args)
    weights = args.pretrained
    if weights is None:
        weights = args.out / "pretrained" / f"{BACKBONE}.weights.h5"
        start = cpu_seconds()
        pretrain_backbone(bench.paths["train"], BACKBONE, 64, args.pretrain_epochs, weights, verbose=0,
                          log=lambda message: print(message, file=sys.stderr))
        print(f"pretrained {weights} on train-split crops in {cpu_seconds() - start:.0f} CPU-s "
              f"(not counted below)", file=sys.stderr)
    results = {"(a) from scratch": from_scratch(bench)}
    stage1, model, _ = bottleneck(bench, weights)
    results["(b) bottleneck head only"] = {**stage1, **bench.score(model)}
    results["(c) bottleneck + fine-tune"] = bottleneck_then_fine_tune(bench, weights)
    results["(d) as (c), BatchNorm trains"] = bottleneck_then_fine_tune(bench, weights, train_batchnorm=True)
    print(f"\nclassification + localization, synthetic shapes (at most {args.max_shapes} per image; "
          f"{len(bench.train.images)} train / "
          f"{len(bench.val.images)} val images, {args.image_size} px, tiny backbone), "
          f"{bench.budget:.0f} CPU-s each")
    print(f"{'variant':30s} {'steps':>6s} {'CPU-s':>6s} {'accuracy':>9s} {'mean IoU':>9s} {'loc. acc.':>9s}")
    for name, row in results.items():
        print(f"{name:30s} {row['steps']:6d} {row['cpu_s']:6.0f} {row['accuracy']:9.3f} "
              f"{row['mean_iou']:9.3f} {row['localization_accuracy']:9.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))


if __name__ == "__main__":
    main()
