"""A dozen training images: do the shipped configs learn them?

    .venv/bin/python benchmarks/small_dataset.py --out runs/bench_small
    .venv/bin/python benchmarks/small_dataset.py --variants lite0 --families yolo   # one run

A user's first real dataset is often a dozen images. This makes one with the synthetic
generator (`--images` in all, split 30 / 10 / 60 %: 12 train, 4 val, 24 test images at
`--image-size`) and trains each family in `--families` three ways, with the shipped
configs and nothing else changed but the data and the image size:

- `before`: the `*_synthetic` config (tiny backbone, random init) with the settings these
  configs had before `min_steps_per_epoch` existed: one pass per epoch (a dozen images
  make one or two steps), early stopping on the loss of the 4 val images;
- `synthetic`: the same config as shipped now (an epoch is at least 20 steps; early
  stopping and the best checkpoint follow the task metric on val, every epoch);
- `lite0`: the `*_lite0` config as shipped (ImageNet EfficientNet-Lite0, bottleneck then
  fine-tuning with BatchNorm frozen).

Each run is scored on the 24 test images by `detseg evaluate`'s code (pycocotools for
detectors, mIoU for segmentation). CPU seconds are this process's user + system time for
the training (the machine may be shared: CPU time, not wall time). Prints a table and the
ratios against `before`; writes `results.json` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.workflows.evaluate import evaluate_model  # noqa: E402
from detseg.workflows.train import train_model  # noqa: E402

SPLIT_FRACTIONS = (0.3, 0.1, 0.6)
MEANINGFUL_BASE = 0.01  # a ratio against a metric below this says nothing
BEFORE = ["stage1.min_steps_per_epoch=0", "stage2.min_steps_per_epoch=0", "eval.every=0",
          "early_stopping.monitor=val_loss", "early_stopping.mode=min"]
VARIANTS = {"before": ("{family}_synthetic", BEFORE), "synthetic": ("{family}_synthetic", []),
            "lite0": ("{family}_lite0", [])}
# The number each family is judged by, as the evaluation report holds it.
HEADLINES = {"yolo": ("coco", "bbox", "AP50"), "ssd": ("coco", "bbox", "AP50"),
             "faster_rcnn": ("coco", "bbox", "AP50"), "mask_rcnn": ("coco", "segm", "AP50"),
             "unet": ("semantic", "mean_iou"), "fcn": ("semantic", "mean_iou")}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def headline(report: dict, family: str) -> float:
    path = HEADLINES[family]
    if path[0] == "coco":
        return float(report["coco"][path[1]]["stats"][path[2]])
    return float(report["semantic"]["mean_iou"])


def run_variant(family: str, variant: str, splits: dict[str, Path], args: argparse.Namespace) -> dict:
    config, extra = VARIANTS[variant]
    name = f"small_{family}_{variant}"
    overrides = [f"name={name}", f"runs_dir={args.out / 'runs'}", f"model.image_size={args.image_size}",
                 "data.synthetic=null", f"data.train={splits['train']}", f"data.val={splits['val']}",
                 *extra]
    started = cpu_seconds()
    result = train_model(config.format(family=family), overrides, verbose=0,
                         log=lambda message: print(f"   {message}", flush=True))
    train_cpu_s = cpu_seconds() - started
    evaluation = evaluate_model(result.run_dir, splits["test"], args.out / "reports" / name, progress=False)
    return {"family": family, "variant": variant, "config": config.format(family=family),
            "train_cpu_s": round(train_cpu_s, 1), "test_metric": headline(evaluation.report, family),
            "metric": ".".join(HEADLINES[family][1:]), "run_dir": str(result.run_dir)}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'family':<12} {'variant':<10} {'metric':<14} {'test':>7} {'vs before':>10} {'train CPU-s':>12}")
    before = {row["family"]: row["test_metric"] for row in rows if row["variant"] == "before"}
    for row in rows:
        base = before.get(row["family"])
        ratio = f"{row['test_metric'] / base:.2f}x" if base and base >= MEANINGFUL_BASE else "(base ~0)"
        print(f"{row['family']:<12} {row['variant']:<10} {row['metric']:<14} {row['test_metric']:>7.3f} "
              f"{ratio:>10} {row['train_cpu_s']:>12.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_small"))
    parser.add_argument("--families", nargs="+", default=["yolo", "unet"], choices=sorted(HEADLINES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--images", type=int, default=40, help="all splits together (30/10/60 %%)")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    splits = ensure_synthetic(args.out / "data", num_images=args.images, image_size=args.image_size,
                              seed=0, fractions=SPLIT_FRACTIONS)
    rows = []
    for family in args.families:
        for variant in args.variants:
            print(f"== {family}: {variant}", flush=True)
            rows.append(run_variant(family, variant, splits, args))
            (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
