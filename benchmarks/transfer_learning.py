"""What each transfer-learning stage buys, with EfficientNet-Lite0's ImageNet weights: metric vs CPU time.

    .venv/bin/python benchmarks/transfer_learning.py --out runs/bench_transfer   # ~40 min on a loaded 2-core CPU
    .venv/bin/python benchmarks/transfer_learning.py --tasks clsloc --clsloc-budget-cpu-s 40 \
        --clsloc-images 300 --eval-every-cpu-s 10 --out runs/bench_transfer_quick     # quick look

Two tasks on the synthetic shapes set (`data.synthetic`): classification + localization
of the single object of each image (`--max-shapes 1 --min-shape-size 0.15`, as
`configs/clsloc_synthetic.yaml`), and YOLO detection on the multi-object set (the
synthetic defaults, as `configs/yolo_synthetic.yaml`). For each task, side by side in
one run, every variant gets the same budget of counted CPU seconds of this process
(`resource.getrusage`: on a shared machine CPU time stays fair where wall time does not;
evaluation is not counted, nor is the first step of each `fit`, which traces the training
graph: a one-off cost of tens of CPU-s for lite0, recorded as `first_step_cpu_s`):

(a) from scratch: random efficientnet_lite0 + head, everything trains (BatchNorm too);
(b) bottleneck head only: ImageNet lite0, frozen, runs once over the train images (that
    pass counts), then the head trains on the cached features;
(c) bottleneck then fine-tuning: (b) until `--stage1-share` of the budget (the same run:
    (c) continues from (b)'s head at that moment), then the top `--unfreeze` blocks train
    with the head, BatchNorm frozen, at `--fine-tune-lr-factor` x the learning rate;
(d) as (c), BatchNorm of the unfrozen blocks trains too;
(ref) today's `tiny` backbone from `detseg pretrain` on the train split's object crops
    (pretraining not counted), with the shipped configs' recipe: bottleneck for the same
    share, then every block with BatchNorm training at the full learning rate.

Every `--eval-every-cpu-s` counted CPU seconds the val split is scored by the library's
`training.evaluation_callback.EvaluationCallback` (cls+loc: localization accuracy and box
mIoU; YOLO: pycocotools' AP50 and AP). Writes `--out/results.json` and
`--out/transfer_<task>.png` (metric vs CPU seconds, one line per variant), and prints a
table of each variant's metric at a few budgets with its ratio to (a).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tensorflow as tf  # noqa: E402

from detseg.core.atomic_files import write_file_atomic, write_json_atomic  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import MAX_SHAPES, MIN_SHAPE_SIZE, ensure_synthetic  # noqa: E402
from detseg.models.yolo.head import YoloHeadConfig  # noqa: E402
from detseg.pipelines.augment import AugmentConfig  # noqa: E402
from detseg.training.clsloc_family import ClsLocHeadConfig  # noqa: E402
from detseg.training.families import FAMILIES  # noqa: E402
from detseg.training.pretrain import pretrain_backbone  # noqa: E402
from transfer_variants import Bench, Curve, bottleneck, fine_tune, from_scratch  # noqa: E402

BACKBONE = "efficientnet_lite0"
REFERENCE_BACKBONE = "tiny"
# Per task: family, synthetic set, head, the tiny reference's width (as the shipped
# configs), and the metrics plotted (the first one is the table's).
TASKS = {
    "clsloc": dict(family="clsloc", max_shapes=1, min_shape_size=0.15, tiny_alpha=1.0,
                   head=ClsLocHeadConfig(hidden_units=128, dropout=0.1),
                   metrics=("loc_accuracy", "box_mIoU")),
    "yolo": dict(family="yolo", max_shapes=MAX_SHAPES, min_shape_size=MIN_SHAPE_SIZE, tiny_alpha=2.0,
                 head=YoloHeadConfig(), metrics=("coco_AP50", "coco_AP")),
}
VARIANTS = ("(a) scratch", "(b) bottleneck", "(c) fine-tune, BN frozen", "(d) fine-tune, BN trains",
            "(ref) tiny, detseg pretrain")
MAX_TABLE_COLUMNS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="clsloc,yolo", help="comma-separated, of: clsloc, yolo")
    for task, size, images, budget in (("clsloc", 128, 500, 45.0), ("yolo", 192, 300, 75.0)):
        parser.add_argument(f"--{task}-size", type=int, default=size, help="model input side, px")
        parser.add_argument(f"--{task}-images", type=int, default=images, help="synthetic images (70%% train)")
        parser.add_argument(f"--{task}-budget-cpu-s", type=float, default=budget, help="CPU-s per variant")
    parser.add_argument("--eval-every-cpu-s", type=float, default=15.0, help="evaluate every N counted CPU-s")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (scratch, heads)")
    parser.add_argument("--fine-tune-lr-factor", type=float, default=0.1, help="(c)/(d) lr = factor x --lr")
    parser.add_argument("--unfreeze", default="all", help="blocks fine-tuned in (c)/(d): a number or 'all'")
    parser.add_argument("--stage1-share", type=float, default=0.4, help="share of the budget for stage 1")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="detseg pretrain epochs for (ref)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_transfer"))
    args = parser.parse_args()
    args.tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    for task in args.tasks:
        if task not in TASKS:
            parser.error(f"--tasks: unknown task {task!r}; expected some of {', '.join(TASKS)}")
    if not 0.0 < args.stage1_share < 1.0:
        parser.error(f"--stage1-share: expected a number between 0 and 1, got {args.stage1_share}")
    if args.unfreeze != "all":
        args.unfreeze = int(args.unfreeze)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_bench(args, task: str) -> tuple[Bench, dict]:
    spec = TASKS[task]
    size = getattr(args, f"{task}_size")
    paths = ensure_synthetic(args.out / f"synthetic_{task}", num_images=getattr(args, f"{task}_images"),
                             image_size=max(size, 128), max_shapes=spec["max_shapes"],
                             min_shape_size=spec["min_shape_size"])
    bench = Bench(family=FAMILIES[spec["family"]], head_config=spec["head"], train=load_coco(paths["train"]),
                  val=load_coco(paths["val"]), image_size=size, batch_size=args.batch_size,
                  budget=getattr(args, f"{task}_budget_cpu_s"), eval_every=args.eval_every_cpu_s, lr=args.lr,
                  augment=AugmentConfig(crop=0.0, blur=0.0))
    return bench, paths


def run_task(args, task: str) -> dict:
    bench, paths = make_bench(args, task)
    share, alpha = args.stage1_share * bench.budget, TASKS[task]["tiny_alpha"]
    log(f"{task}: {len(bench.train.images)} train / {len(bench.val.images)} val images, "
        f"{bench.image_size} px, {bench.budget:.0f} CPU-s per variant")
    curves: dict[str, Curve] = {}
    log(f"{task}: {VARIANTS[0]}")
    curves[VARIANTS[0]] = from_scratch(bench, BACKBONE)
    log(f"{task}: {VARIANTS[1]}")
    curves[VARIANTS[1]], snapshot = bottleneck(bench, BACKBONE, "imagenet", bench.budget, snapshot_at=share)
    fine_lr = args.lr * args.fine_tune_lr_factor
    for name, train_batchnorm in ((VARIANTS[2], False), (VARIANTS[3], True)):
        log(f"{task}: {name}")
        curves[name] = fine_tune(bench, snapshot, BACKBONE, "imagenet", fine_lr, args.unfreeze, train_batchnorm)
    log(f"{task}: {VARIANTS[4]}: pretraining (not counted)")
    weights = args.out / f"pretrained_{task}" / f"{REFERENCE_BACKBONE}.weights.h5"
    pretrain_backbone(paths["train"], REFERENCE_BACKBONE, 64, args.pretrain_epochs, weights, alpha=alpha,
                      verbose=0, log=log)
    _, ref_snapshot = bottleneck(bench, REFERENCE_BACKBONE, weights, share, alpha=alpha)
    curves[VARIANTS[4]] = fine_tune(bench, ref_snapshot, REFERENCE_BACKBONE, weights, args.lr, "all", True,
                                    alpha=alpha)
    return {"image_size": bench.image_size, "train_images": len(bench.train.images),
            "val_images": len(bench.val.images), "budget_cpu_s": bench.budget,
            "metrics": list(TASKS[task]["metrics"]),
            "curves": {name: {"steps": curve.steps, "first_step_cpu_s": curve.first_step_cpu_s,
                              "points": curve.points} for name, curve in curves.items()}}


def value_at(points: list[dict], metric: str, cpu_s: float, slack: float) -> float:
    """The metric of the last evaluation at or before `cpu_s` (+ `slack`: they run one step past a mark)."""
    values = [point[metric] for point in points if point["cpu_s"] <= cpu_s + slack]
    return values[-1] if values else math.nan


def first_reaching(points: list[dict], metric: str, target: float) -> float:
    return next((point["cpu_s"] for point in points if point[metric] >= target), math.nan)


def summary_table(task: str, result: dict, eval_every: float) -> str:
    metric, budget, curves = result["metrics"][0], result["budget_cpu_s"], result["curves"]
    # The evaluation marks themselves (at most MAX_TABLE_COLUMNS of them, the budget last).
    step = eval_every * math.ceil(budget / eval_every / MAX_TABLE_COLUMNS)
    marks = [mark for mark in (step * k for k in range(1, MAX_TABLE_COLUMNS + 1)) if mark < budget - 1e-6]
    marks.append(budget)
    slack = 0.25 * eval_every
    scratch = curves[VARIANTS[0]]["points"]
    scratch_final = scratch[-1][metric]
    header = " | ".join(f"@{mark:.0f} CPU-s" for mark in marks)
    lines = [f"{task}: {result['train_images']} train / {result['val_images']} val images, "
             f"{result['image_size']} px, {budget:.0f} CPU-s per variant; val {metric}",
             f"| variant | steps | {header} | x (a) at {budget:.0f} | CPU-s to reach (a)'s final |",
             "|---|---" + "|---" * len(marks) + "|---|---|"]
    for name, curve in curves.items():
        values = [value_at(curve["points"], metric, mark, slack) for mark in marks]
        final = curve["points"][-1][metric]
        # (a) at ~0 makes a ratio meaningless: say so instead of printing inf or nan.
        ratio = f"{final / scratch_final:.2f}" if scratch_final >= 0.01 else "(a) ~0"
        reach = first_reaching(curve["points"], metric, scratch_final) if scratch_final >= 0.01 else math.nan
        cells = " | ".join(f"{value:.3f}" for value in values)
        reach_cell = "-" if math.isnan(reach) else f"{reach:.0f}"
        lines.append(f"| {name} | {curve['steps']} | {cells} | {ratio} | {reach_cell} |")
    return "\n".join(lines)


def plot_task(task: str, result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2))
    for axis, metric in zip(axes, metrics):
        for name, curve in result["curves"].items():
            points = curve["points"]
            axis.plot([p["cpu_s"] for p in points], [p[metric] for p in points], marker="o", markersize=3,
                      label=name)
        axis.set_xlabel("CPU seconds of training (evaluation not counted)")
        axis.set_ylabel(f"val {metric}")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{task}: {BACKBONE} (ImageNet) vs from scratch, {result['image_size']} px, "
                    f"{result['train_images']} train images")
    figure.tight_layout()
    write_file_atomic(path, lambda temporary: figure.savefig(temporary, dpi=90, format="png"))
    plt.close(figure)


def main() -> None:
    args = parse_args()
    tf.config.experimental.enable_op_determinism()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"args": {key: str(value) for key, value in vars(args).items()}, "tasks": {}}
    for task in args.tasks:
        results["tasks"][task] = run_task(args, task)
        write_json_atomic(results, args.out / "results.json")  # each finished task is kept
        plot_task(task, results["tasks"][task], args.out / f"transfer_{task}.png")
    for task, result in results["tasks"].items():
        print()
        print(summary_table(task, result, args.eval_every_cpu_s))
    print(f"\nwrote {args.out / 'results.json'} and {', '.join(f'transfer_{t}.png' for t in args.tasks)}")


if __name__ == "__main__":
    main()
