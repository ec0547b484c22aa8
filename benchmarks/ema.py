"""Weight averaging (EMA) on vs off, YOLO and U-Net, at an equal budget: val metric vs CPU seconds.

    .venv/bin/python benchmarks/ema.py --out runs/bench_ema            # ~6 CPU-minutes on 2 cores
    .venv/bin/python benchmarks/ema.py --families unet --momentum 0.99 --out runs/bench_ema_099

Each family trains its smoke config (`configs/smoke/<family>.yaml`, tiny backbone from
scratch) scaled up by `RUN_OVERRIDES`: more synthetic images, stage 1 on cached bottleneck
features, then every backbone block fine-tuned, the task metric on val after every epoch
(`eval.every: 1`), no early stopping. The two variants run the very same config, steps and
seed; the only difference is `ema.enabled` (with `ema.momentum`). With EMA on, every
point of its curve is the averaged weights' metric (what `detseg train` validates, keeps
as best and exports: `training.ema`); off, the raw weights'.

The x axis is training CPU time of this process (`resource.getrusage`: user + system, all
threads; on a shared machine CPU time stays fair where wall time does not), summed over
both stages' epochs from each epoch's start to the start of its validation: evaluation,
feature caching and the final evaluation are not counted. Writes `--out/results.json`
and `--out/ema_curves.png` (one panel per family, both variants), then prints a table:
each variant's metric at the end of stage 1 and of training, the best epoch's, the
final model's (`evaluation.json`: the best checkpoint), CPU-s, and on/off ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from detseg.core.atomic_files import write_file_atomic, write_json_atomic  # noqa: E402
from detseg.training.config import load_config  # noqa: E402
from detseg.training.trainer import train  # noqa: E402

FAMILIES = ("yolo", "unet")
# The smoke configs made into a short but real run: 160 images at 96 px (112 train),
# stage 1 on cached features, then the whole backbone fine-tuned (BatchNorm trains: no
# ImageNet statistics to keep), an epoch at least 10 steps.
COMMON_OVERRIDES = ("data.synthetic.num_images=160", "data.synthetic.image_size=96", "model.image_size=96",
                    "stage1.epochs=3", "stage1.min_steps_per_epoch=10", "stage2.epochs=6",
                    "stage2.min_steps_per_epoch=14", "stage2.unfreeze=all", "stage2.batchnorm=train",
                    "eval.every=1", "early_stopping.enabled=false")
RUN_OVERRIDES = {"yolo": ("stage2.lr=0.002",), "unet": ("stage2.lr=0.002",)}
# The epoch-log key of each family's val metric (EvaluationCallback) and evaluation.json's key.
EPOCH_METRIC = {"yolo": "val_coco_AP50", "unet": "val_mIoU"}
FINAL_METRIC = {"yolo": "bbox_AP50", "unet": "mean_iou"}
VARIANTS = ("EMA off", "EMA on")
MEANINGFUL_BASE = 0.01  # a ratio against a metric below this says nothing


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class TrainingCpuCurve(keras.callbacks.Callback):
    """After every epoch of every stage: `{"stage", "epoch", "cpu_s", "steps", metric}` in `points`.

    `cpu_s` sums, over the epochs so far, the CPU time from an epoch's start to the start of
    its validation (training steps only). Runs after the run's own callbacks, so the
    epoch's logs hold the task metric (`EvaluationCallback`) of the weights validated.
    """

    def __init__(self, metric: str):
        super().__init__()
        self.metric, self.points = metric, []
        self.stage, self.cpu_s, self.steps = 0, 0.0, 0
        self._start, self._counted = 0.0, None

    def on_train_begin(self, logs=None):
        self.stage += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._counted = cpu_seconds(), None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):
        if self._counted is None:
            self._counted = cpu_seconds() - self._start

    def on_epoch_end(self, epoch, logs=None):
        self.cpu_s += self._counted if self._counted is not None else cpu_seconds() - self._start
        value = (logs or {}).get(self.metric, math.nan)
        self.points.append({"stage": self.stage, "epoch": epoch + 1, "cpu_s": round(self.cpu_s, 2),
                            "steps": self.steps, self.metric: float(value)})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of: {', '.join(FAMILIES)}")
    parser.add_argument("--momentum", type=float, default=0.95,
                        help="ema.momentum of the EMA-on runs (0.95: an average over ~20 of the ~100 steps)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ema"))
    args = parser.parse_args()
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in args.families:
        if family not in FAMILIES:
            parser.error(f"--families: unknown family {family!r}; expected some of {', '.join(FAMILIES)}")
    if not 0.0 <= args.momentum < 1.0:
        parser.error(f"--momentum: expected a number in [0, 1), got {args.momentum}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_variant(args, family: str, ema: bool) -> dict:
    overrides = [f"runs_dir={args.out / 'runs'}", f"name={family}_ema_{'on' if ema else 'off'}",
                 *COMMON_OVERRIDES, *RUN_OVERRIDES[family], f"ema.enabled={str(ema).lower()}",
                 f"ema.momentum={args.momentum}"]
    config = load_config(f"smoke/{family}", overrides)
    curve = TrainingCpuCurve(EPOCH_METRIC[family])
    total = cpu_seconds()
    result = train(config, restart=True, verbose=0, log=lambda message: log(f"  {message}"), callbacks=[curve])
    return {"overrides": overrides, "points": curve.points, "final": float(result.metrics[FINAL_METRIC[family]]),
            "weights": result.metrics.get("weights", "raw"), "total_cpu_s": round(cpu_seconds() - total, 1)}


def ratio(on: float, off: float) -> str:
    return f"{on / off:.2f}" if off >= MEANINGFUL_BASE else "off ~0"


def summary_table(results: dict) -> str:
    lines = ["| family | variant | steps | train CPU-s | val metric after stage 1 | after the last epoch | "
             "best epoch | final model (best checkpoint) | total CPU-s |", "|---" * 9 + "|"]
    for family, variants in results["families"].items():
        metric = EPOCH_METRIC[family]
        row_values = {}
        for name in VARIANTS:
            v = variants[name]
            points = v["points"]
            stage1 = [p[metric] for p in points if p["stage"] == 1]
            values = (stage1[-1] if stage1 else math.nan, points[-1][metric], max(p[metric] for p in points), v["final"])
            row_values[name] = values
            lines.append(f"| {family} ({metric}) | {name} | {points[-1]['steps']} | {points[-1]['cpu_s']:.0f} | "
                         + " | ".join(f"{x:.3f}" for x in values) + f" | {v['total_cpu_s']:.0f} |")
        on, off = row_values[VARIANTS[1]], row_values[VARIANTS[0]]
        cpu_ratio = variants[VARIANTS[1]]["points"][-1]["cpu_s"] / max(variants[VARIANTS[0]]["points"][-1]["cpu_s"], 1e-9)
        lines.append(f"| {family} | on / off | = | {cpu_ratio:.2f} | " + " | ".join(ratio(a, b) for a, b in zip(on, off))
                     + " | |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(results["families"])
    figure, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), squeeze=False)
    for axis, family in zip(axes[0], families):
        metric = EPOCH_METRIC[family]
        for name, style in zip(VARIANTS, ("-", "--")):
            points = results["families"][family][name]["points"]
            axis.plot([p["cpu_s"] for p in points], [p[metric] for p in points], style, marker="o", markersize=3,
                      label=name + (f" (momentum {results['momentum']})" if name == VARIANTS[1] else ""))
        stage2_start = next((p["cpu_s"] for p in results["families"][family][VARIANTS[0]]["points"]
                             if p["stage"] == 2), None)
        if stage2_start is not None:
            axis.axvline(stage2_start, color="grey", alpha=0.4, linewidth=1)
        axis.set_title(f"{family}: val {metric}, equal steps")
        axis.set_xlabel("CPU seconds of training (evaluation not counted)")
        axis.set_ylabel(f"val {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("EMA of the weights on vs off (smoke configs scaled up; grey line: stage 2 starts)")
    figure.tight_layout()
    write_file_atomic(path, lambda temporary: figure.savefig(temporary, dpi=90, format="png"))
    plt.close(figure)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"momentum": args.momentum, "families": {}}
    for family in args.families:
        results["families"][family] = {}
        for name, ema in zip(VARIANTS, (False, True)):
            log(f"{family}: {name}")
            results["families"][family][name] = run_variant(args, family, ema)
            write_json_atomic(results, args.out / "results.json")  # each finished run is kept
    plot(results, args.out / "ema_curves.png")
    print(summary_table(results))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'ema_curves.png'}")


if __name__ == "__main__":
    main()
