"""A 3-member ensemble (one config, three seeds) against its best member: metric and inference time.

    .venv/bin/python benchmarks/ensemble.py --out runs/bench_ensemble                  # YOLO
    .venv/bin/python benchmarks/ensemble.py --family unet --out runs/bench_ensemble_unet
    .venv/bin/python benchmarks/ensemble.py --reuse-runs --out runs/bench_ensemble     # re-measure only
    .venv/bin/python benchmarks/ensemble.py --num-images 40 --stage1-epochs 1 --stage2-epochs 1 \\
        --override stage1.min_steps_per_epoch=1 --override stage2.min_steps_per_epoch=1 \\
        --out runs/bench_ensemble_tiny                                                  # a check, seconds

Each member trains the family's smoke config (`configs/smoke/<family>.yaml`, tiny backbone
from scratch) scaled up as `benchmarks/ema.py` scales it (more synthetic images at 96 px,
stage 1 on cached features, every backbone block fine-tuned), with only `seed=` differing
between members: the same synthetic dataset, different initial weights, shuffling and
augmentation. Budget options (`--num-images`, `--stage1-epochs`, `--stage2-epochs`,
`--override KEY=VALUE`) apply to every member alike.

Every member and the ensemble of all of them are then scored on the same split (`--split`,
default val) by `detseg.workflows.evaluate.evaluate_model`, the function behind `detseg
evaluate RUN_DIR` and `detseg evaluate --ensemble RUN_DIR ...`: the ensemble is
`model_sources.load_ensemble_runs`' `EnsembleModel` (weighted box fusion for detectors,
averaged probabilities for segmentation and cls+loc), the model `detseg export --ensemble`
exports. Each evaluation's report lands in `--out/eval/<model>/`. Members' best checkpoints
are chosen on val loss: on `--split val` the member and the best-of-N pick both see the
scored split (`--split test` avoids that).

Inference time: each model's `predict_step` as one graph function (`training.predictions.
compiled_predict`, what evaluation runs) over the split's eval batches already in memory
(`pipelines.dataset.build_eval_dataset`: decode and letterbox not counted), traced once
first, the fastest of `--timing-repeats` passes (wall clock; the fastest pass is the least
disturbed on a shared machine), divided by the number of real images (a padded last batch
costs its full batch). Writes `--out/results.json` and prints a table: every member's
metrics, the best member (by the task's first metric), the ensemble, ensemble / best
member, and ms per image of the ensemble against one member (the members' mean).
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

import numpy as np  # noqa: E402

from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.core.contract import CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, SEMANTIC  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import annotation_paths  # noqa: E402
from detseg.training.config import load_config  # noqa: E402
from detseg.training.families import FAMILIES  # noqa: E402
from detseg.training.trainer import train  # noqa: E402
from detseg.training.training_data import synthetic_dir  # noqa: E402
from detseg.workflows.evaluate import evaluate_model  # noqa: E402

# benchmarks/ema.py's scaled-up smoke run, without its per-epoch task metric (not needed
# here; checkpoints are still chosen on val loss): 96 px, stage 1 on cached features, then
# the whole backbone fine-tuned (BatchNorm trains: no ImageNet statistics to keep).
COMMON_OVERRIDES = ("data.synthetic.image_size=96", "model.image_size=96", "stage1.min_steps_per_epoch=10",
                    "stage2.min_steps_per_epoch=14", "stage2.unfreeze=all", "stage2.batchnorm=train",
                    "early_stopping.enabled=false")
# benchmarks/ema.py's stage-2 learning rates; other families keep their smoke config's.
RUN_OVERRIDES = {"yolo": ("stage2.lr=0.002",), "unet": ("stage2.lr=0.002",)}
DEFAULT_NUM_IMAGES, DEFAULT_STAGE1_EPOCHS, DEFAULT_STAGE2_EPOCHS = 240, 3, 6
# Per task: the metrics read from an evaluation report, as (label, report section, key).
# The first one ranks the members.
TASK_METRICS = {
    DETECTION: (("bbox AP50", "coco.bbox.stats", "AP50"), ("bbox AP", "coco.bbox.stats", "AP")),
    INSTANCE: (("bbox AP50", "coco.bbox.stats", "AP50"), ("segm AP50", "coco.segm.stats", "AP50"),
               ("bbox AP", "coco.bbox.stats", "AP"), ("segm AP", "coco.segm.stats", "AP")),
    SEMANTIC: (("mIoU", "semantic", "mean_iou"), ("pixel acc", "semantic", "pixel_accuracy")),
    CLASSIFICATION_LOCALIZATION: (("loc acc", "classification_localization", "localization_accuracy"),
                                  ("class acc", "classification_localization", "accuracy"),
                                  ("box mIoU", "classification_localization", "mean_iou")),
}
MEANINGFUL_BASE = 0.01  # a ratio against a metric below this says nothing


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="yolo", choices=sorted(FAMILIES),
                        help="the smoke config configs/smoke/<family>.yaml every member trains (default yolo)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated `seed=` of the members (default 0,1,2)")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                        help=f"synthetic images, 70/15/15 train/val/test (default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--stage1-epochs", type=int, default=DEFAULT_STAGE1_EPOCHS)
    parser.add_argument("--stage2-epochs", type=int, default=DEFAULT_STAGE2_EPOCHS)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a further config override for every member (repeatable), applied last")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="the split scored (default val)")
    parser.add_argument("--batch-size", type=int, default=8, help="evaluation and timing batch size (default 8)")
    parser.add_argument("--timing-repeats", type=int, default=5, help="timed passes per model; the fastest counts")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="keep finished member runs in --out/runs (and resume unfinished ones) instead of "
                             "training them again; their training CPU-s then counts only what ran now")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ensemble"))
    args = parser.parse_args()
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected at least 2 different seeds, got {args.seeds}")
    for flag, value, low in (("--num-images", args.num_images, 10), ("--stage1-epochs", args.stage1_epochs, 0),
                             ("--stage2-epochs", args.stage2_epochs, 0), ("--batch-size", args.batch_size, 1),
                             ("--timing-repeats", args.timing_repeats, 1)):
        if value < low:
            parser.error(f"{flag}: expected >= {low}, got {value}")
    return args


def member_overrides(args, seed: int) -> list[str]:
    return [f"runs_dir={args.out / 'runs'}", f"name={args.family}_seed{seed}", f"seed={seed}",
            f"data.synthetic.num_images={args.num_images}", *COMMON_OVERRIDES, *RUN_OVERRIDES.get(args.family, ()),
            f"stage1.epochs={args.stage1_epochs}", f"stage2.epochs={args.stage2_epochs}", *args.override]


def train_member(args, seed: int) -> dict:
    overrides = member_overrides(args, seed)
    config = load_config(f"smoke/{args.family}", overrides)
    start = cpu_seconds()
    result = train(config, restart=not args.reuse_runs, verbose=0, log=lambda message: log(f"  {message}"))
    return {"seed": seed, "overrides": overrides, "run_dir": str(result.run_dir),
            "train_cpu_s": round(cpu_seconds() - start, 1),
            "trainer_val_metric": {result.headline_metric: result.metrics.get(result.headline_metric)},
            "annotations": str(annotation_paths(synthetic_dir(config))[args.split])}


def report_metrics(report: dict, task: str) -> dict[str, float]:
    """The task's `TASK_METRICS` read from an evaluation report (NaN where not measured)."""
    metrics = {}
    for label, section, key in TASK_METRICS[task]:
        node = report
        for part in section.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        value = node.get(key) if isinstance(node, dict) else None
        metrics[label] = math.nan if value is None else float(value)
    return metrics


def evaluate(args, annotations: str, name: str, run_dir: str | None = None,
             ensemble: list[str] | None = None) -> dict:
    """`evaluate_model` (what `detseg evaluate` runs) on one run directory or an ensemble."""
    evaluation = evaluate_model(run_dir, annotations, args.out / "eval" / name, ensemble=ensemble,
                                batch_size=args.batch_size, examples=0, progress=False, log=log)
    return {"task": evaluation.task, "metrics": report_metrics(evaluation.report, evaluation.task),
            "report": str(evaluation.files["json"])}


def seconds_per_image(model, dataset, task: str, image_size: int, batch_size: int, repeats: int) -> float:
    """Fastest of `repeats` passes of `model.predict_step` over `dataset`'s eval batches, per real image."""
    from detseg.pipelines.dataset import build_eval_dataset
    from detseg.training.predictions import compiled_predict

    batches = [(x, int(np.sum(meta["valid"].numpy())))
               for x, meta in build_eval_dataset(dataset, task, image_size, batch_size)]
    num_images = sum(count for _, count in batches)
    predict = compiled_predict(model)
    _materialize(predict(batches[0][0]))  # traces the graph: not timed
    fastest = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for x, _ in batches:
            _materialize(predict(x))
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / max(num_images, 1)


def _materialize(outputs) -> None:
    for value in outputs.values():
        np.asarray(value)


def time_models(args, members: list[dict]) -> dict:
    """ms per image: every member alone and the ensemble of all, on the scored split."""
    from detseg.training.run_model import load_run_model
    from detseg.workflows.model_sources import load_ensemble_runs

    dataset = load_coco(members[0]["annotations"])
    timings = {}
    for member in members:
        run = load_run_model(member["run_dir"])
        timings[f"seed {member['seed']}"] = seconds_per_image(run.model, dataset, run.task, run.image_size,
                                                              args.batch_size, args.timing_repeats) * 1000
    run = load_ensemble_runs([m["run_dir"] for m in members])
    timings["ensemble"] = seconds_per_image(run.model, dataset, run.task, run.image_size, args.batch_size,
                                            args.timing_repeats) * 1000
    return {name: round(ms, 3) for name, ms in timings.items()}


def ratio(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base):
        return "n/a"
    return f"{value / base:.2f}" if base >= MEANINGFUL_BASE else "base ~0"


def summarize(results: dict) -> dict:
    """The best member (by the task's first metric), the ensemble's ratios against it, and times."""
    members, labels = results["members"], list(results["ensemble"]["metrics"])
    best = max(members, key=lambda m: -math.inf if math.isnan(m["metrics"][labels[0]]) else m["metrics"][labels[0]])
    one_member_ms = statistics.mean(results["ms_per_image"][f"seed {m['seed']}"] for m in members)
    ensemble_ms = results["ms_per_image"]["ensemble"]
    return {"best_member_seed": best["seed"], "ranked_by": labels[0],
            "ensemble_over_best": {label: ratio(results["ensemble"]["metrics"][label], best["metrics"][label])
                                   for label in labels},
            "ms_per_image_one_member": round(one_member_ms, 3), "ms_per_image_ensemble": ensemble_ms,
            "time_ensemble_over_member": round(ensemble_ms / max(one_member_ms, 1e-12), 2)}


def summary_table(results: dict) -> str:
    summary, labels = results["summary"], list(results["ensemble"]["metrics"])
    times = results["ms_per_image"]
    lines = [f"{results['family']}, {len(results['members'])} members, scored on {results['split']} "
             f"({results['num_scored_images']} images)", "",
             "| model | train CPU-s | " + " | ".join(labels) + " | ms / image |", "|---" * (len(labels) + 3) + "|"]

    def row(name: str, metrics: dict, cpu: str, ms: float) -> str:
        return f"| {name} | {cpu} | " + " | ".join(f"{metrics[label]:.3f}" for label in labels) + f" | {ms:.2f} |"

    for member in results["members"]:
        lines.append(row(f"member seed {member['seed']}", member["metrics"], f"{member['train_cpu_s']:.0f}",
                         times[f"seed {member['seed']}"]))
    best = next(m for m in results["members"] if m["seed"] == summary["best_member_seed"])
    lines.append(row(f"best member (seed {best['seed']}, by {summary['ranked_by']})", best["metrics"], "",
                     times[f"seed {best['seed']}"]))
    lines.append(row(f"ensemble of {len(results['members'])}", results["ensemble"]["metrics"], "",
                     times["ensemble"]))
    lines.append("| ensemble / best member | | " + " | ".join(summary["ensemble_over_best"][label] for label in labels)
                 + f" | {summary['time_ensemble_over_member']:.2f} (vs one member's mean "
                 f"{summary['ms_per_image_one_member']:.2f} ms) |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"family": args.family, "split": args.split, "seeds": args.seeds, "members": [],
               "budget": {"num_images": args.num_images, "stage1_epochs": args.stage1_epochs,
                          "stage2_epochs": args.stage2_epochs, "overrides": args.override}}
    for seed in args.seeds:
        log(f"{args.family}: training the member with seed={seed}")
        member = train_member(args, seed)
        log(f"{args.family}: evaluating seed {seed} on {member['annotations']}")
        member.update(evaluate(args, member["annotations"], f"seed{seed}", run_dir=member["run_dir"]))
        results["members"].append(member)
        write_json_atomic(results, args.out / "results.json")  # each finished member is kept
    annotations = results["members"][0]["annotations"]
    results["num_scored_images"] = len(load_coco(annotations).images)
    log(f"{args.family}: evaluating the ensemble of {len(args.seeds)}")
    results["ensemble"] = evaluate(args, annotations, "ensemble", ensemble=[m["run_dir"] for m in results["members"]])
    log(f"{args.family}: timing inference ({args.timing_repeats} passes per model)")
    results["ms_per_image"] = time_models(args, results["members"])
    results["summary"] = summarize(results)
    write_json_atomic(results, args.out / "results.json")
    print(summary_table(results))
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
