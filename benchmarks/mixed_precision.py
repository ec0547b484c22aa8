"""Mixed precision vs float32: training-step speed of every family, and accuracy at equal steps.

    nice -n 10 .venv/bin/python benchmarks/mixed_precision.py --out runs/bench_precision   # ~50 min *
    .venv/bin/python benchmarks/mixed_precision.py --families yolo --skip-accuracy --out runs/bench_precision_yolo
    .venv/bin/python benchmarks/mixed_precision.py --steps 3 --families yolo,clsloc --skip-accuracy \
        --image-size 96 --batch-size 4 --out runs/bench_precision_quick                      # a quick look

(1) Speed. For each family (`training.families.FAMILIES`) its smoke config's model
(`configs/smoke/<family>.yaml`: tiny backbone from scratch) at `--image-size` px, tiny
backbone width `--alpha` (default as the issue's YOLO measurement: width 2, 256 px, batch
16), every layer trainable, BatchNorm training (as stage 2 with `unfreeze: all`), compiled
in graph mode with the run's optimizer (`training.transfer_stages.build_optimizer`) and
the family's losses, is built once per `--precisions` entry, each under its policy
(`training.trainer.precision_policy`). Each model first takes `--warmup` steps (the first
traces the graph: not timed), then the variants take turns, one `train_on_batch` step each
on the same fixed synthetic batch (no input pipeline in the timing), `--steps` rounds:
load drifts of a shared machine hit every variant alike. Reported per variant: median
wall seconds per step (-> steps/s and img/s) and median process CPU seconds per step
(`resource.getrusage`, all threads), and the ratios of steps/s and CPU-s to the first
variant (float32). The CPU's bf16 support (`avx512_bf16`, `amx_bf16` flags) goes into
results.json: without it bfloat16 is emulated and slower.

(2) Accuracy, `--accuracy-families` (default YOLO and U-Net). `training.trainer.train`
on the smoke config scaled up as `benchmarks/ema.py` does (`COMMON_OVERRIDES`: 160 images
at 96 px, stage 1 on cached features, then every block fine-tuned, val metric after every
epoch), once per precision and `--seeds` entry. The variants run the same config, data and
steps (EQUAL STEPS); they differ only in `precision`. Reported: the final model's metric
(`evaluation.json`, best checkpoint), the training CPU-s (`ema.TrainingCpuCurve`:
evaluation and feature caching not counted), and the val metric each variant had reached
within the smaller of the two CPU budgets (EQUAL CPU: the last epoch that ended within it),
with the mixed/float32 ratios. With several seeds the table gives mean and min..max, the
noise the ratio must be read against.

Writes `--out/results.json` (after every finished measurement) and prints the tables.

* On an idle 2-core AVX2 CPU without bf16 instructions (bfloat16 emulated: a YOLO step at
  256 px takes ~5.6x the CPU of float32 there): ~30 min of speed part, ~20 of accuracy.
  With AVX-512 bf16 / AMX, less.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402

from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.pipelines.dataset import build_dataset  # noqa: E402
from detseg.training.config import load_config  # noqa: E402
from detseg.training.families import FAMILIES  # noqa: E402
from detseg.training.trainer import precision_policy, train  # noqa: E402
from detseg.training.transfer_stages import build_optimizer, build_task_model  # noqa: E402
from ema import COMMON_OVERRIDES, RUN_OVERRIDES, TrainingCpuCurve  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The epoch-log key of each task's val metric (EvaluationCallback), beside the family's
# headline metric in evaluation.json (`FAMILIES[f].headline_metric`).
EPOCH_METRIC = {"detection": "val_coco_AP50", "instance": "val_coco_segm_AP50", "semantic": "val_mIoU",
                "classification_localization": "val_loc_accuracy"}
TRAIN_FRACTION = 0.7  # ensure_synthetic's default train share
MEANINGFUL_BASE = 0.01  # a ratio against a metric below this says nothing
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="speed part: comma-separated family names")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                        help=f"comma-separated, of {', '.join(PRECISIONS)}; the first is the ratios' base")
    parser.add_argument("--image-size", type=int, default=256, help="speed part: model input side, px")
    parser.add_argument("--batch-size", type=int, default=16, help="speed part: images per step")
    parser.add_argument("--alpha", type=float, default=2.0, help="speed part: tiny backbone width (model.alpha)")
    parser.add_argument("--steps", type=int, default=15, help="speed part: timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="speed part: untimed steps first (tracing included)")
    parser.add_argument("--override", action="append", default=[], metavar="[FAMILY:]KEY=VALUE",
                        help="speed part: config override, for every family or for FAMILY only (repeatable), "
                             "e.g. yolo:model.head.neck_widths=[64,128,256]")
    parser.add_argument("--accuracy-families", default="yolo,unet", help="accuracy part: comma-separated")
    parser.add_argument("--seeds", default="0", help="accuracy part: comma-separated config seeds per variant")
    parser.add_argument("--accuracy-override", action="append", default=[], metavar="KEY=VALUE",
                        help="accuracy part: extra override after benchmarks/ema.py's (repeatable), "
                             "e.g. stage2.epochs=2")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_precision"))
    args = parser.parse_args()
    args.families, args.accuracy_families = comma_list(args.families), comma_list(args.accuracy_families)
    args.precisions = comma_list(args.precisions)
    for option, names in (("--families", args.families), ("--accuracy-families", args.accuracy_families)):
        for family in names:
            if family not in FAMILIES:
                parser.error(f"{option}: unknown family {family!r}; expected some of {', '.join(FAMILIES)}")
    if len(args.precisions) < 2 or any(p not in PRECISIONS for p in args.precisions):
        parser.error(f"--precisions: expected two or more of {', '.join(PRECISIONS)}, got {args.precisions}")
    try:
        args.seeds = [int(seed) for seed in comma_list(args.seeds)]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 1 or args.image_size < 32:
        parser.error("--steps, --warmup and --batch-size must be >= 1, --image-size >= 32")
    for item in args.override:
        family, sep, _ = item.partition(":")
        if sep and "=" not in family and family not in FAMILIES:
            parser.error(f"--override {item!r}: unknown family {family!r}")
    return args


def cpu_flags() -> dict[str, bool]:
    """Which of `CPU_FLAGS` this CPU reports (Linux `/proc/cpuinfo`), and its model name."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    lines = text.splitlines()
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return {"model": model, **{flag: flag in flags for flag in CPU_FLAGS}}


# ------------------------------------------------------------------------------- speed


def speed_overrides(args, family: str) -> list[str]:
    """`model.*` of the speed part, then the `--override`s meant for every family or for `family`."""
    overrides = [f"model.image_size={args.image_size}", f"model.alpha={args.alpha}"]
    for item in args.override:
        target, sep, rest = item.partition(":")
        if not sep or "=" in target:
            overrides.append(item)
        elif target == family:
            overrides.append(rest)
    return overrides


def fixed_batch(args, task: str, data_dir: Path):
    """One batch `(x, y)` of `--batch-size` un-augmented synthetic train images of `task`, and the class count."""
    num_images = math.ceil(args.batch_size / TRAIN_FRACTION) + 2
    paths = ensure_synthetic(data_dir, num_images=num_images, image_size=args.image_size, seed=0)
    dataset = load_coco(paths["train"])
    x, y = next(iter(build_dataset(dataset, task, args.image_size, args.batch_size, drop_remainder=True)))
    return x, y, dataset.label_map.num_classes


def compiled_model(config, num_classes: int) -> keras.Model:
    """The whole model of `config` (backbone + head, all trainable) under its precision, compiled in graph mode."""
    spec = FAMILIES[config.model.family]
    with precision_policy(config.precision):
        model, _ = build_task_model(config, spec, num_classes)
        model.compile(optimizer=build_optimizer(config, config.stage2.lr), **spec.compile_kwargs(config.model.head))
    return model


def timed_step(model: keras.Model, x, y) -> tuple[float, float, float]:
    """One training step: `(wall seconds, process CPU seconds, loss)`; the loss read back ends the step."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    logs = model.train_on_batch(x, y, return_dict=True)
    return time.perf_counter() - wall, cpu_seconds() - cpu, float(logs["loss"])


def measure_speed(args, family: str) -> dict:
    """Every precision's model of `family` on one fixed batch, steps interleaved: medians per variant."""
    overrides = speed_overrides(args, family)
    configs = {p: load_config(f"smoke/{family}", [*overrides, f"precision={p}"]) for p in args.precisions}
    x, y, num_classes = fixed_batch(args, FAMILIES[family].task, args.out / f"synthetic_{args.image_size}")
    models, results = {}, {}
    for precision, config in configs.items():
        models[precision] = compiled_model(config, num_classes)
        start_cpu, start_wall = cpu_seconds(), time.perf_counter()
        for _ in range(args.warmup):
            timed_step(models[precision], x, y)
        results[precision] = {"warmup_cpu_s": round(cpu_seconds() - start_cpu, 2),
                              "warmup_wall_s": round(time.perf_counter() - start_wall, 2),
                              "parameters": models[precision].count_params(), "wall_s": [], "cpu_s": [], "loss": []}
        log(f"  {precision}: {args.warmup} warm-up step(s) {results[precision]['warmup_cpu_s']:.1f} CPU-s")
    for _ in range(args.steps):
        for precision in args.precisions:
            wall, cpu, loss = timed_step(models[precision], x, y)
            for key, value in (("wall_s", wall), ("cpu_s", cpu), ("loss", loss)):
                results[precision][key].append(round(value, 4))
    for precision, result in results.items():
        result["median_wall_s"] = statistics.median(result["wall_s"])
        result["median_cpu_s"] = statistics.median(result["cpu_s"])
        result["steps_per_s"] = 1.0 / max(result["median_wall_s"], 1e-9)
        result["images_per_s"] = args.batch_size * result["steps_per_s"]
        result["finite_loss"] = all(math.isfinite(v) for v in result["loss"])
    del models
    keras.backend.clear_session()
    return {"overrides": overrides, "variants": results}


def speed_table(speed: dict, precisions: list[str], batch_size: int) -> str:
    base = precisions[0]
    lines = ["| family | precision | steps/s | img/s | median wall s/step | median CPU s/step | warm-up CPU-s | "
             f"steps/s vs {base} | CPU-s/step vs {base} | losses finite |", "|---" * 10 + "|"]
    for family, measured in speed.items():
        variants = measured["variants"]
        for precision in precisions:
            v, b = variants[precision], variants[base]
            lines.append(f"| {family} | {precision} | {v['steps_per_s']:.2f} | {v['images_per_s']:.1f} | "
                         f"{v['median_wall_s']:.3f} | {v['median_cpu_s']:.3f} | {v['warmup_cpu_s']:.1f} | "
                         f"{v['steps_per_s'] / b['steps_per_s']:.2f}x | "
                         f"{v['median_cpu_s'] / max(b['median_cpu_s'], 1e-9):.2f}x | {v['finite_loss']} |")
    return f"batch {batch_size}; ratios > 1 in steps/s and < 1 in CPU-s/step favour the variant\n" + "\n".join(lines)


# ---------------------------------------------------------------------------- accuracy


def run_accuracy(args, family: str, precision: str, seed: int) -> dict:
    """One `train` of the scaled-up smoke config under `precision`: its CPU curve and final metric."""
    overrides = [f"runs_dir={args.out / 'runs'}", f"name={family}_{precision}_seed{seed}", *COMMON_OVERRIDES,
                 *RUN_OVERRIDES.get(family, ()), f"seed={seed}", f"precision={precision}", *args.accuracy_override]
    config = load_config(f"smoke/{family}", overrides)
    curve = TrainingCpuCurve(EPOCH_METRIC[FAMILIES[family].task])
    total = cpu_seconds()
    result = train(config, restart=True, verbose=0, log=lambda message: log(f"  {message}"), callbacks=[curve])
    return {"overrides": overrides, "points": curve.points,
            "final": float(result.metrics[FAMILIES[family].headline_metric]),
            "train_cpu_s": curve.points[-1]["cpu_s"] if curve.points else math.nan,
            "total_cpu_s": round(cpu_seconds() - total, 1)}


def metric_within(points: list[dict], metric: str, budget_cpu_s: float) -> float:
    """The val metric of the last epoch that ended within `budget_cpu_s` counted CPU-s (nan if none did)."""
    within = [p[metric] for p in points if p["cpu_s"] <= budget_cpu_s + 1e-6]
    return within[-1] if within else math.nan


def summarize_accuracy(accuracy: dict, precisions: list[str]) -> dict:
    """Per family and precision: final and equal-CPU metrics over seeds, and their ratios to the base."""
    summary = {}
    for family, by_precision in accuracy.items():
        metric = EPOCH_METRIC[FAMILIES[family].task]
        seeds = sorted(set.intersection(*(set(runs) for runs in by_precision.values())))
        rows = {p: {"final": [], "equal_cpu": [], "train_cpu_s": []} for p in by_precision}
        for seed in seeds:
            budget = min(by_precision[p][seed]["train_cpu_s"] for p in by_precision)
            for precision in by_precision:
                run = by_precision[precision][seed]
                rows[precision]["final"].append(run["final"])
                rows[precision]["equal_cpu"].append(metric_within(run["points"], metric, budget))
                rows[precision]["train_cpu_s"].append(run["train_cpu_s"])
        summary[family] = {"epoch_metric": metric, "final_metric": FAMILIES[family].headline_metric,
                           "seeds": seeds, "variants": rows}
    return summary


def spread(values: list[float], digits: int = 3) -> str:
    """`mean` of the finite values, with `(min..max)` when there are several."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = statistics.fmean(finite)
    if len(finite) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(finite):.{digits}f}..{max(finite):.{digits}f})"


def mean_ratio(values: list[float], base: list[float]) -> str:
    """Mean of `values` over mean of `base` (finite ones), or "base ~0" where that ratio says nothing."""
    finite = [v for v in values if math.isfinite(v)]
    finite_base = [v for v in base if math.isfinite(v)]
    if not finite or not finite_base or statistics.fmean(finite_base) < MEANINGFUL_BASE:
        return "base ~0"
    return f"{statistics.fmean(finite) / statistics.fmean(finite_base):.2f}"


def accuracy_table(summary: dict, precisions: list[str]) -> str:
    base = precisions[0]
    lines = ["EQUAL STEPS; values are means over seeds (min..max)",
             "| family | precision | seeds | train CPU-s | final metric (best checkpoint) | "
             f"val metric at equal CPU | final vs {base} | equal CPU vs {base} | CPU-s vs {base} |",
             "|---" * 9 + "|"]
    for family, s in summary.items():
        rows = s["variants"]
        for precision in [p for p in precisions if p in rows]:
            r, b = rows[precision], rows[base]
            cpu_ratio = mean_ratio(r["train_cpu_s"], b["train_cpu_s"])
            lines.append(f"| {family} ({s['final_metric']} / {s['epoch_metric']}) | {precision} | {len(s['seeds'])} | "
                         f"{spread(r['train_cpu_s'], 1)} | {spread(r['final'])} | {spread(r['equal_cpu'])} | "
                         f"{mean_ratio(r['final'], b['final'])} | {mean_ratio(r['equal_cpu'], b['equal_cpu'])} | "
                         f"{cpu_ratio} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"precisions": args.precisions, "cpu": cpu_flags(), "speed_settings": {
        "image_size": args.image_size, "batch_size": args.batch_size, "alpha": args.alpha, "steps": args.steps,
        "warmup": args.warmup}, "speed": {}, "accuracy_settings": {"seeds": args.seeds, "budget": "equal steps",
                                                                   "common_overrides": list(COMMON_OVERRIDES)},
               "accuracy": {}}
    path = args.out / "results.json"
    if not args.skip_speed:
        for family in args.families:
            log(f"speed: {family}")
            results["speed"][family] = measure_speed(args, family)
            write_json_atomic(results, path)  # each finished measurement is kept
    accuracy = {}
    if not args.skip_accuracy:
        for family in args.accuracy_families:
            accuracy[family] = {p: {} for p in args.precisions}
            for seed in args.seeds:
                for precision in args.precisions:
                    log(f"accuracy: {family}, {precision}, seed {seed}")
                    accuracy[family][precision][seed] = run_accuracy(args, family, precision, seed)
                    results["accuracy"] = {f: {p: {str(s): run for s, run in runs.items()} for p, runs in by_p.items()}
                                           for f, by_p in accuracy.items()}
                    write_json_atomic(results, path)
        results["accuracy_summary"] = summarize_accuracy(accuracy, args.precisions)
        write_json_atomic(results, path)
    print(f"CPU: {results['cpu']}")
    if results["speed"]:
        print("\nTraining step speed (fixed batch, interleaved, after warm-up)")
        print(speed_table(results["speed"], args.precisions, args.batch_size))
    if accuracy:
        print("\nAccuracy")
        print(accuracy_table(results["accuracy_summary"], args.precisions))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
