"""Learning curves on a CPU-time budget: the one harness of the model comparisons.

`benchmarks/detectors.py`, `segmentation.py` and `two_stage.py` train every model (and
every learning rate of a sweep) the same way and read the same numbers from the curves:

- The budget is CPU time of this process (`time.process_time`: all threads), not
  wall-clock, so the comparison stays fair when something else shares the machine. The
  clock starts after the first step, which traces the training graph (a one-off cost,
  reported apart as `first_step_cpu_s`), and pauses while the model is evaluated.
- The learning rate warms up linearly over the first 3% of the cap, then follows a cosine
  down to 5% of its peak at the cap, so each run ends annealed at the cap. Points before
  the cap are read mid-schedule: a run given a smaller cap would do better there.
- Every `every_s` CPU-seconds of training (and at the cap) the model is evaluated on val by
  the benchmark's own `evaluate()`; each point is `{"cpu_s", "steps", "images", **metrics}`.

What a comparison reads from the curves (`value_at`, `cpu_to_reach`, `best_by_final`) and
how it draws them (`plot_panels`) are here too, so the three benchmarks print the same table.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from detseg.core.atomic_files import write_json_atomic

WARMUP_FRACTION = 0.03
MIN_LR_FRACTION = 0.05


def parse_list(text: str, kind=str) -> list:
    """`"a, b,c"` -> `[kind("a"), kind("b"), kind("c")]` (empty items dropped)."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def add_curve_arguments(parser, models: tuple[str, ...], default_models: str, lrs: str, cap_s: float,
                        every_s: float, image_size: int = 128) -> None:
    """The options every curve benchmark shares: which models and lrs, the budget, the size, resuming."""
    parser.add_argument("--models", default=default_models, help=f"comma list of {models} (default {default_models})")
    parser.add_argument("--lrs", default=lrs, help=f"peak Adam learning rates swept for every model (default {lrs})")
    parser.add_argument("--cap-cpu-s", type=float, default=cap_s, help=f"training CPU-seconds per run (default {cap_s:g})")
    parser.add_argument("--every-cpu-s", type=float, default=every_s,
                        help=f"evaluate on val every this many (default {every_s:g})")
    parser.add_argument("--image-size", type=int, default=image_size, help=f"model input size (default {image_size})")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out/results.json")
    parser.add_argument("--seed", type=int, default=0)


def parse_curve_arguments(parser, argv, models: tuple[str, ...]):
    """`parser.parse_args(argv)` with `--models` and `--lrs` as lists, unknown models refused."""
    args = parser.parse_args(argv)
    args.models, args.lrs = parse_list(args.models), parse_list(args.lrs, float)
    if unknown := [m for m in args.models if m not in models]:
        parser.error(f"--models: unknown {unknown}; choose from {models}")
    return args


def warmup_cosine(peak_lr: float, fraction: float) -> float:
    """The harness's learning rate at `fraction` (0..1) of a run: linear warm-up over
    `WARMUP_FRACTION`, then cosine down to `MIN_LR_FRACTION` of `peak_lr`."""
    warmup = min(1.0, fraction / WARMUP_FRACTION)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
    return peak_lr * max(warmup * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine), 1e-3)


class CpuBudgetCurve(keras.callbacks.Callback):
    """Warm-up + cosine learning rate over `cap_s` CPU-seconds, evaluating every `every_s`.

    `evaluate()` returns a dict of floats (the val metrics of the model as it is now); it
    runs inside `fit` between steps, and its CPU time is not counted. `fit` stops at the cap.
    """

    def __init__(self, cap_s: float, peak_lr: float, evaluate: Callable[[], dict], every_s: float,
                 batch_size: int, log: Callable[[str], None] = print):
        super().__init__()
        self.cap_s, self.peak_lr, self.evaluate, self.every_s = cap_s, peak_lr, evaluate, every_s
        self.batch_size, self.log = batch_size, log
        self.points: list[dict] = []
        self.steps = 0
        self.first_step_cpu_s = 0.0
        self.eval_cpu_s = 0.0
        self._clock_start = None  # process_time when training time started counting
        self._next_eval = every_s
        self._wall_start = None

    def used(self) -> float:
        """Training CPU-seconds so far (tracing step and evaluations excluded)."""
        if self._clock_start is None:
            return 0.0
        return time.process_time() - self._clock_start - self.eval_cpu_s

    def learning_rate(self, fraction: float) -> float:
        return warmup_cosine(self.peak_lr, fraction)

    def on_train_begin(self, logs=None):
        self.first_step_cpu_s = time.process_time()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.learning_rate(self.used() / self.cap_s))

    def on_train_batch_end(self, batch, logs=None):
        if self._clock_start is None:  # the tracing step: not counted
            self._clock_start = time.process_time()
            self.first_step_cpu_s = self._clock_start - self.first_step_cpu_s
            self._wall_start = time.perf_counter()
            return
        self.steps += 1
        used = self.used()
        if used >= self.cap_s or used >= self._next_eval:
            self._record(used)
            self._next_eval = (math.floor(used / self.every_s) + 1) * self.every_s
        if used >= self.cap_s:
            self.model.stop_training = True

    def _record(self, used: float) -> None:
        start = time.process_time()
        metrics = self.evaluate()
        self.eval_cpu_s += time.process_time() - start
        point = {"cpu_s": round(used, 1), "steps": self.steps, "images": self.steps * self.batch_size,
                 **{key: round(float(value), 4) for key, value in metrics.items()}}
        self.points.append(point)
        self.log("    " + "  ".join(f"{key} {value}" for key, value in point.items()))

    def summary(self) -> dict:
        cpu = self.used()
        wall = time.perf_counter() - self._wall_start if self._wall_start else 0.0
        return {"steps": self.steps, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                "first_step_cpu_s": round(self.first_step_cpu_s, 1), "eval_cpu_s": round(self.eval_cpu_s, 1),
                "train_img_per_cpu_s": round(self.steps * self.batch_size / max(cpu, 1e-9), 2),
                "points": self.points}


def train_curve(model: keras.Model, batches, curve: CpuBudgetCurve, steps_per_epoch: int = 25) -> dict:
    """`model.fit(batches)` (repeated) until `curve`'s cap; returns `curve.summary()`."""
    model.fit(batches, epochs=10_000_000, steps_per_epoch=steps_per_epoch, callbacks=[curve], verbose=0)
    return curve.summary()


SETTINGS = ("cap_cpu_s", "every_cpu_s", "image_size", "train_images")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_summary(args, train_images: int, val_images: int) -> dict:
    """results.json's head (command, cores, the curve SETTINGS; `args` has `cap_cpu_s`,
    `every_cpu_s`, `image_size`, `out`, `resume`) and, with `args.resume`, the runs of an
    earlier results.json measured with the same settings."""
    summary = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "cores": os.cpu_count(),
               "cap_cpu_s": args.cap_cpu_s, "every_cpu_s": args.every_cpu_s, "image_size": args.image_size,
               "train_images": train_images, "val_images": val_images, "runs": {},
               "load_average_before": os.getloadavg()}
    results_path = args.out / "results.json"
    if args.resume and results_path.exists():
        earlier = json.loads(results_path.read_text(encoding="utf-8"))
        if changed := [key for key in SETTINGS if earlier.get(key) != summary[key]]:
            raise SystemExit(f"--resume: {results_path} was measured with other settings ({', '.join(changed)}); "
                             f"use another --out")
        summary["runs"] = earlier["runs"]
    return summary


def run_missing(summary: dict, results_path: Path, jobs: dict[str, Callable[[], dict]], train: bool = True) -> None:
    """Runs each job (`{run key: () -> run record}`) not yet in `summary["runs"]`, writing
    `results_path` after each; with `train=False` only reports which are kept."""
    for key, job in jobs.items():
        if key in summary["runs"]:
            log(f"[{key}] kept from {results_path}")
        elif train:
            summary["runs"][key] = job()
            write_json_atomic(summary, results_path)
    summary["load_average_after"] = os.getloadavg()


def predict_speed(predict: Callable, image_size: int, batch: int, seconds: float = 4.0) -> float:
    """Images/s of `predict(float32 [batch, S, S, 3]) -> dict with "num_detections"` on random
    pixels (forward, decoding, NMS: whatever `predict` does), after one warm-up call."""
    images = tf.random.uniform([batch, image_size, image_size, 3], 0, 255, seed=1)
    predict(images)["num_detections"].numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(images)["num_detections"].numpy()
        count += batch
    return round(count / (time.perf_counter() - start), 1)


# ----------------------------------------------------------------------------- reading curves


def value_at(points: list[dict], metric: str, cpu_s: float) -> float | None:
    """The metric sampled at budget `cpu_s`: the first point at or past it (None past the run's end).

    Points are taken at the first step past each multiple of `every_s`, so with budgets on
    those multiples the point read overshoots its budget by less than one step.
    """
    return next((p[metric] for p in points if p["cpu_s"] >= cpu_s - 1e-6), None)


def cpu_to_reach(points: list[dict], metric: str, target: float) -> float | None:
    """CPU-seconds of the first point with `metric >= target` (None: never within the run)."""
    return next((p["cpu_s"] for p in points if p[metric] >= target), None)


def best_by_final(runs: dict[str, dict], metric: str) -> str:
    """The key of the run whose last point scores highest: a sweep's best setting at the cap."""
    return max(runs, key=lambda key: runs[key]["points"][-1][metric] if runs[key]["points"] else -math.inf)


def ratio(ours: float | None, theirs: float | None, floor: float = 1e-3) -> str:
    if ours is None or theirs is None:
        return "-"
    return f"{ours / theirs:.2f}" if theirs >= floor else "theirs ~0"


def time_ratio(ours: list[dict], theirs: list[dict], metric: str, target: float) -> str:
    """CPU-s to reach `target`, theirs / ours; a lower bound ("> x") when only ours reached it."""
    mine, other = cpu_to_reach(ours, metric, target), cpu_to_reach(theirs, metric, target)
    if mine is not None and other is None and theirs:
        return f"> {theirs[-1]['cpu_s'] / mine:.2f}"
    return ratio(other, mine)


def comparison_table(curves: dict[str, list[dict]], metric: str, ours: str, theirs: str,
                     budgets: list[float], targets: list[float]) -> str:
    """Markdown: each curve's metric at `budgets` (CPU-s) and the CPU-s to reach `targets`, ours/theirs rows."""
    head = ([f"{metric} @ {b:.0f} CPU-s" for b in budgets] + [f"CPU-s to {metric} {t}" for t in targets])
    lines = ["| run | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, points in curves.items():
        at = [value_at(points, metric, b) for b in budgets]
        reach = [cpu_to_reach(points, metric, t) for t in targets]
        cells = [("-" if v is None else f"{v:.3f}") for v in at]
        cells += [(f"> {points[-1]['cpu_s']:.0f}" if r is None else f"{r:.0f}") for r in reach]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if ours in curves and theirs in curves:
        a, b = curves[ours], curves[theirs]
        cells = [ratio(value_at(a, metric, x), value_at(b, metric, x)) for x in budgets]
        # time to a target: theirs / ours, so > 1 means ours gets there faster
        cells += [time_ratio(a, b, metric, t) for t in targets]
        lines.append(f"| **{ours} / {theirs}** (time: theirs / ours) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_panels(path: Path, panels: dict[str, dict[str, list[dict]]], metric: str, title: str,
                bold: set[str] = frozenset(), targets: list[float] = ()) -> None:
    """One panel per entry of `panels` ({panel title: {run label: points}}): metric vs CPU-s, PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(max(6.5 * len(panels), 8), 4.6), squeeze=False)
    for axis, (panel, runs) in zip(axes[0], panels.items()):
        for label, points in runs.items():
            axis.plot([p["cpu_s"] for p in points], [p[metric] for p in points], marker="o", markersize=3,
                      linewidth=2.4 if label in bold else 1.0, alpha=1.0 if label in bold else 0.6, label=label)
        for target in targets:
            axis.axhline(target, color="grey", alpha=0.3, linewidth=1)
        axis.set_title(panel)
        axis.set_xlabel("training CPU-seconds (all threads; evaluation not counted)")
        axis.set_ylabel(f"val {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("\n".join(textwrap.wrap(title, 18 * len(panels) + 60)), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)
