"""oneDNN off against on, on whole `detseg train` runs of the shipped configs.

TensorFlow turns its oneDNN CPU kernels on by default only on some CPUs
(`TF_ENABLE_ONEDNN_OPTS`, read once when TensorFlow loads). `benchmarks/training_efficiency.py`
measures one training step of a YOLO trained from scratch with every layer training; the
configs users start from (`*_lite0`: EfficientNet-Lite0 with ImageNet weights, stage 1 on
cached bottleneck features, stage 2 fine-tuning the top blocks with BatchNorm frozen) are
a different mix of work. This script runs the command a user runs,

    detseg train CONFIG stage1.epochs=.. stage2.epochs=.. early_stopping.enabled=false

in child processes with `TF_ENABLE_ONEDNN_OPTS` 0 and 1, taking turns, each in a fresh
runs directory (no cached features or checkpoints carried over; the synthetic dataset and
the converted ImageNet weights are made once, before the timed runs). It prints each run's
wall-clock and CPU seconds, the ratio off / on, and the final validation metric of both
(the settings change float rounding, so the metrics may differ in the last digits).

    .venv/bin/python benchmarks/onednn_training.py                               # ~20 minutes
    .venv/bin/python benchmarks/onednn_training.py --configs yolo_lite0 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_OVERRIDES = ("stage1.epochs=2", "stage2.epochs=2", "early_stopping.enabled=false")
METRIC_KEYS = ("segm_AP", "bbox_AP", "mean_iou", "localization_accuracy")  # evaluation.json, first found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="yolo_lite0,unet_lite0", help="comma list of packaged config names")
    parser.add_argument("--rounds", type=int, default=1, help="runs per setting and config (turns alternate)")
    parser.add_argument("--set", nargs="*", default=list(DEFAULT_OVERRIDES), metavar="KEY=VALUE",
                        help=f"overrides for every run (default: {' '.join(DEFAULT_OVERRIDES)})")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_onednn_training"),
                        help="shared synthetic data and results.json")
    return parser.parse_args()


def prepare(config_name: str, overrides: list[str]) -> None:
    """Make the synthetic dataset and the converted backbone weights before any timed run."""
    from detseg.training.config import load_config
    from detseg.training.training_data import resolve_training_data
    from detseg.models.backbones.registry import build_backbone

    config = load_config(config_name, overrides)
    resolve_training_data(config)
    if config.model.weights:
        build_backbone(config.model.backbone, (config.model.image_size,) * 2, weights=config.model.weights)


def headline(evaluation: dict) -> str:
    for key in METRIC_KEYS:
        if isinstance(evaluation.get(key), (int, float)):
            return f"{key} {evaluation[key]:.4f}"
    raise SystemExit(f"evaluation.json holds none of {METRIC_KEYS}: {sorted(evaluation)}")


def timed_run(config_name: str, overrides: list[str], onednn: str) -> dict:
    """One `detseg train` child process with `TF_ENABLE_ONEDNN_OPTS=onednn`."""
    with tempfile.TemporaryDirectory(prefix="onednn-run-") as runs_dir:
        command = [sys.executable, "-m", "detseg", "train", config_name, *overrides,
                   f"runs_dir={runs_dir}", "--quiet"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn},
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed (TF_ENABLE_ONEDNN_OPTS={onednn}):\n{done.stderr[-2000:]}")
        evaluations = sorted(Path(runs_dir).glob("**/evaluation.json"))
        evaluation = json.loads(evaluations[-1].read_text()) if evaluations else {}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"onednn": onednn, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "metric": headline(evaluation)}


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for config_name in args.configs.split(","):
        # One dataset folder per config's data parameters.
        config_overrides = [*args.set, f"data.synthetic.dir={args.out.resolve() / ('synthetic_' + config_name)}"]
        prepare(config_name, config_overrides)
        runs: dict[str, list[dict]] = {"0": [], "1": []}
        for round_index in range(args.rounds):
            for onednn in (("0", "1") if round_index % 2 == 0 else ("1", "0")):
                runs[onednn].append(timed_run(config_name, config_overrides, onednn))
                print(f"  {config_name} oneDNN {onednn}: {runs[onednn][-1]}", flush=True)
        off, on = (statistics.median(r["wall_s"] for r in runs[s]) for s in ("0", "1"))
        off_cpu, on_cpu = (statistics.median(r["cpu_s"] for r in runs[s]) for s in ("0", "1"))
        results[config_name] = {"runs": runs, "off_over_on_wall": round(off / on, 3),
                                "off_over_on_cpu": round(off_cpu / on_cpu, 3)}
        print(f"{config_name}: oneDNN off {off:.1f} s, on {on:.1f} s wall: off / on = {off / on:.2f} "
              f"(CPU {off_cpu:.1f} / {on_cpu:.1f} s = {off_cpu / on_cpu:.2f}); metrics off "
              f"{runs['0'][-1]['metric']}, on {runs['1'][-1]['metric']}", flush=True)
    (args.out / "results.json").write_text(json.dumps({"overrides": args.set, "results": results}, indent=2))


if __name__ == "__main__":
    main()
