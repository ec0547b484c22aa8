"""Two-stage detectors as learning curves: Faster R-CNN and Mask R-CNN against our YOLO, same backbone.

    .venv/bin/python benchmarks/two_stage.py --out runs/bench_two_stage              # ~30 min on 2 cores
    .venv/bin/python benchmarks/two_stage.py --cap-cpu-s 60 --every-cpu-s 30 --lrs 1e-3 --out /tmp/ts   # quick look

Every model (`--models`: Faster R-CNN, Mask R-CNN, and our one-stage YOLO as the
reference) gets the same tiny backbone from scratch (BatchNorm trainable), the same batches
(the synthetic shapes set from `data.synthetic.ensure_synthetic` through the `pipelines`
dataset, default augmentation, letterboxed to `--image-size`), Adam with gradient clipping,
for every learning rate of `--lrs`. The CPU-time budget, schedule and sampling are
`learning_curves.py`'s: every `--every-cpu-s` training CPU-seconds up to `--cap-cpu-s` the
model predicts the val split (`predict_step`: its own decoding, NMS and, for Mask R-CNN,
mask pasting), predictions go back to original pixels, and pycocotools
(`evaluation.evaluate_coco`) scores bbox mAP@[.5:.95] and mAP@.5 (and segm for Mask R-CNN).

The best lr of each model is the one with the highest bbox mAP at the cap; the table
compares Faster R-CNN against YOLO at several budgets and gives the CPU time each needs
to reach bbox mAP 0.3 and 0.5. Predict throughput (batch 1 and `--batch-size`) is measured
after every run. Writes `--out/results.json` after every run (`--resume` skips runs
already there) and `--out/two_stage_curves.png`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from learning_curves import (CpuBudgetCurve, add_curve_arguments, best_by_final, comparison_table, log,  # noqa: E402
                             parse_curve_arguments, plot_panels, predict_speed, run_missing, start_summary,
                             train_curve)
from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.evaluation.coco_eval import evaluate_coco  # noqa: E402
from detseg.evaluation.coco_results import predictions_to_coco_results  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.ops.letterbox import boxes_to_original, masks_to_original  # noqa: E402
from detseg.models.rcnn.faster_rcnn import build_faster_rcnn  # noqa: E402
from detseg.models.rcnn.mask_rcnn import build_mask_rcnn  # noqa: E402
from detseg.models.yolo.detector import build_yolo_detector  # noqa: E402
from detseg.pipelines.dataset import build_dataset, build_eval_dataset  # noqa: E402

MAX_OBJECTS = 16  # the synthetic images hold at most 6 shapes
MODELS = ("faster_rcnn", "mask_rcnn", "yolo")
OURS, REFERENCE = "faster_rcnn", "yolo"  # the comparison table's rows
TARGETS = (0.3, 0.5)
NMS = {"iou_threshold": 0.5, "score_threshold": 0.05}


def build_model(name: str, backbone: keras.Model, num_classes: int, max_detections: int) -> tuple[keras.Model, str]:
    """`(model, pipeline task)`; the two-stage models with the same NMS settings."""
    nms = {**NMS, "max_detections": max_detections}
    if name == "faster_rcnn":
        return build_faster_rcnn(backbone, num_classes, options={"nms": nms}), "detection"
    if name == "mask_rcnn":
        return build_mask_rcnn(backbone, num_classes, options={"nms": nms}), "instance"
    return build_yolo_detector(backbone, num_classes), "detection"  # the default head


def coco_metrics(detect, val, eval_batches, image_size: int, with_masks: bool) -> dict:
    """bbox (and segm) mAP of `detect` on the val split, in original pixels."""
    ids, predictions = [], []
    for x, meta in eval_batches:
        out = {key: value.numpy() for key, value in detect(x).items()}
        for i in np.flatnonzero(meta["valid"].numpy()):
            transform = meta["letterbox"].numpy()[i]
            count = int(out["num_detections"][i])
            prediction = {"boxes": boxes_to_original(out["boxes"][i, :count], transform).numpy(),
                          "scores": out["scores"][i, :count], "classes": out["classes"][i, :count]}
            if with_masks:
                prediction["masks"] = masks_to_original(out["masks"][i, :count], transform, image_size).numpy()
            ids.append(int(meta["image_id"].numpy()[i]))
            predictions.append(prediction)
    results = predictions_to_coco_results(ids, predictions, val.label_map)
    metrics = {}
    for iou_type, prefix in (("bbox", ""), ("segm", "segm_")) if with_masks else (("bbox", ""),):
        stats = evaluate_coco(val, results, iou_type, progress=False)["stats_raw"]
        metrics.update({f"{prefix}mAP": max(stats[0], 0.0), f"{prefix}mAP50": max(stats[1], 0.0)})
    return metrics


def run_key(model: str, lr: float) -> str:
    return f"{model} lr={lr:g}"


def run_one(name: str, lr: float, train, val, args) -> dict:
    keras.utils.set_random_seed(args.seed)
    backbone = build_backbone("tiny", (args.image_size,) * 2)
    model, task = build_model(name, backbone, val.label_map.num_classes, args.max_detections)
    model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=10.0))
    log(f"[{run_key(name, lr)}] {model.count_params():,} parameters; {args.cap_cpu_s:.0f} CPU-s")
    batches = build_dataset(train, task, args.image_size, args.batch_size, shuffle=True, seed=args.seed,
                            max_objects=MAX_OBJECTS, repeat=True, drop_remainder=True)
    eval_batches = build_eval_dataset(val, task, args.image_size, args.batch_size, max_objects=MAX_OBJECTS).cache()
    detect = tf.function(model.predict_step)
    with_masks = task == "instance"
    curve = CpuBudgetCurve(args.cap_cpu_s, lr, lambda: coco_metrics(detect, val, eval_batches, args.image_size,
                                                                    with_masks),
                           args.every_cpu_s, args.batch_size, log=log)
    result = {"model": name, "lr": lr, "params": int(model.count_params()), **train_curve(model, batches, curve)}
    for batch in (1, args.batch_size):
        result[f"predict_img_per_s_b{batch}"] = predict_speed(detect, args.image_size, batch)
    return result


def report(summary: dict, args) -> str:
    """Markdown: every run's end point and speed, then Faster R-CNN vs YOLO at their best lr."""
    runs = summary["runs"]
    lines = [f"| run | params | train img/CPU-s | bbox mAP / mAP50 at cap | segm mAP / mAP50 | "
             f"predict img/s b1 | b{args.batch_size} |", "|---" * 7 + "|"]
    for key, run in runs.items():
        end = run["points"][-1]
        segm = f"{end['segm_mAP']:.3f} / {end['segm_mAP50']:.3f}" if "segm_mAP" in end else "-"
        lines.append(f"| {key} | {run['params']:,} | {run['train_img_per_cpu_s']} | {end['mAP']:.3f} / "
                     f"{end['mAP50']:.3f} | {segm} | {run['predict_img_per_s_b1']} | "
                     f"{run[f'predict_img_per_s_b{args.batch_size}']} |")
    best = {model: best_by_final({k: r for k, r in runs.items() if r["model"] == model}, "mAP")
            for model in args.models if any(r["model"] == model for r in runs.values())}
    summary["best"] = best
    cap = args.cap_cpu_s
    lines += ["", "Best learning rate of each model, bbox mAP (ratio row: Faster R-CNN / YOLO):", ""]
    lines.append(comparison_table({best[m]: runs[best[m]]["points"] for m in best}, "mAP", best.get(OURS, ""),
                                  best.get(REFERENCE, ""), [cap / 4, cap / 2, 3 * cap / 4, cap], list(TARGETS)))
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_curve_arguments(parser, MODELS, ",".join(MODELS), "1e-3,2e-3", cap_s=300.0, every_s=50.0)
    parser.add_argument("--num-images", type=int, default=600, help="synthetic images (70%% train, 15%% val)")
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image size on disk")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-detections", type=int, default=50,
                        help="detections per image (Mask R-CNN computes and pastes a mask for each)")
    parser.add_argument("--data-dir", default="runs/synthetic/bench_detectors")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_two_stage"))
    return parse_curve_arguments(parser, argv, MODELS)


def main(argv=None) -> dict:
    args = parse_args(argv)
    paths = ensure_synthetic(args.data_dir, num_images=args.num_images, image_size=args.source_size, seed=args.seed)
    train, val = load_coco(paths["train"]), load_coco(paths["val"])
    results_path = args.out / "results.json"
    summary = start_summary(args, len(train.images), len(val.images))
    run_missing(summary, results_path, {run_key(name, lr): (lambda n=name, lr=lr: run_one(n, lr, train, val, args))
                                        for name in args.models for lr in args.lrs})
    table = report(summary, args)
    runs = summary["runs"]
    panels = {"bbox mAP, every run": {k: r["points"] for k, r in runs.items()}}
    if masks := {k: [{**p, "mAP": p["segm_mAP"]} for p in r["points"]] for k, r in runs.items()
                 if r["points"] and "segm_mAP" in r["points"][0]}:
        panels["Mask R-CNN segm mAP"] = masks
    plot_panels(args.out / "two_stage_curves.png", panels, "mAP", f"Two-stage vs one-stage on synthetic shapes, "
                f"{args.image_size} px, tiny backbone: val COCO mAP vs training CPU time (bold: best lr)",
                set(summary["best"].values()), list(TARGETS))
    write_json_atomic(summary, results_path)
    print(table)
    print(f"\nwrote {results_path} and {args.out / 'two_stage_curves.png'}")
    return summary


if __name__ == "__main__":
    main()
