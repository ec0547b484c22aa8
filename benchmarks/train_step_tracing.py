"""What building the optimizer's slots at compile saves: a smoke training, traced once or twice.

Keras (TensorFlow backend, no distribution strategy) creates the optimizer's slot
variables inside the first trace of the train step when nobody built them before, and a
`tf.function` that creates variables is traced twice. `TaskModel.compile` (and the
trainer, for a plain stage-1 head) now builds them first (`build_optimizer_slots`).

Each side trains a family's smoke config (`configs/smoke/<family>.yaml`, both stages,
evaluation included) in a child process of its own: "before" with `build_optimizer_slots`
replaced by a no-op, "after" as shipped. The sides take turns, `--rounds` times. Each
child counts how often Keras traced the train step and reports its training seconds.

    .venv/bin/python benchmarks/train_step_tracing.py --families yolo faster_rcnn unet --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from keras.src.backend.tensorflow import trainer as keras_trainer
import detseg.models.task_model as task_model
import detseg.training.transfer_stages as transfer_stages
from detseg.training.config import load_config
from detseg.training.trainer import train

family, runs_dir, side = sys.argv[1:4]
if side == "before":  # Keras's own behaviour: slots created in the first trace
    task_model.build_optimizer_slots = transfer_stages.build_optimizer_slots = lambda model: None
traces = []
train_step = keras_trainer.TensorFlowTrainer.train_step
def counted(self, data):
    traces.append(type(self).__name__)
    return train_step(self, data)
keras_trainer.TensorFlowTrainer.train_step = counted
config = load_config(f"smoke/{family}", [f"runs_dir={runs_dir}"])
start = time.perf_counter()
result = train(config, restart=True, verbose=0, log=lambda message: None)
print(json.dumps({"seconds": time.perf_counter() - start, "traces": len(traces),
                  "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, float)}}))
"""


def run_side(family: str, side: str, runs_dir: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, family, str(runs_dir), side], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{family} {side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["yolo"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        for family in args.families:
            results: dict[str, list[dict]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for side in results:
                    results[side].append(run_side(family, side, Path(tmp) / side))
                    print(f"  {family} {side}: {results[side][-1]['seconds']:.1f} s, "
                          f"{results[side][-1]['traces']} train-step traces", flush=True)
            before = statistics.median(r["seconds"] for r in results["before"])
            after = statistics.median(r["seconds"] for r in results["after"])
            same = results["before"][-1]["metrics"] == results["after"][-1]["metrics"]
            rows.append((family, results["before"][-1]["traces"], before, results["after"][-1]["traces"], after,
                         same))
    print(f"\nsmoke training (both stages + evaluation), median of {args.rounds}, child processes taking turns:")
    print(f"  {'family':12s} {'traces before':>13s} {'s before':>9s} {'traces after':>12s} {'s after':>8s} "
          f"{'before/after':>12s}  same metrics")
    for family, traces_before, before, traces_after, after, same in rows:
        print(f"  {family:12s} {traces_before:13d} {before:9.1f} {traces_after:12d} {after:8.1f} "
              f"{before / after:12.2f}  {same}")


if __name__ == "__main__":
    main()
