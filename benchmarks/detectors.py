"""One-stage detectors as learning curves: our YOLO vs keras-cv's YOLOv8 (and our SSD), each at its best lr.

    .venv/bin/python benchmarks/detectors.py --out runs/bench_detectors           # ~45 min on 2 cores
    .venv/bin/python benchmarks/detectors.py --augments default,flip --lrs 1e-3   # the augmentation reading
    .venv/bin/python benchmarks/detectors.py --cap-cpu-s 120 --every-cpu-s 40 --lrs 2e-3   # quick look

Every model is trained by the SAME code on the SAME batches (the synthetic shapes set from
`data.synthetic.ensure_synthetic`, the `pipelines` detection pipeline, letterboxed to
`--image-size`), from scratch, with Adam, for every learning rate of `--lrs` and every
augmentation of `--augments` (`default`: `AugmentConfig()`, the pipeline's default: flips,
crops, affine, colour jitter, blur; `flip`: horizontal flips only). The CPU-time budget,
schedule and sampling are `learning_curves.py`'s: val COCO mAP@[.5:.95] every
`--every-cpu-s` training CPU-seconds up to `--cap-cpu-s`; each model predicts the val split
(decode + the same class-aware NMS, `models.ops.nms`, for all), boxes go back to original
pixels, and pycocotools (`evaluation.evaluate_coco`) scores them.

keras-cv's model is `YOLOV8Detector(YOLOV8Backbone(stackwise_channels=[32, 64, 128, 256],
stackwise_depth=[1, 2, 2, 1], include_rescaling=True, activation="swish"), fpn_depth=1)`,
built from explicit configs (its preset aliases download weights), with its own loss
(CIoU + BCE) and label encoder (task-aligned assigner).

For each model and augmentation the best learning rate is the one with the highest mAP at
the cap; the table compares our best YOLO against keras-cv's best at several budgets and
gives the CPU time each needs to reach mAP 0.3 and 0.5. Predict throughput (decode + NMS)
at batch 1 and 16 is measured after every run. Writes `--out/results.json` after every
run (`--resume` skips runs already there) and `--out/detector_curves.png`.
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
                             parse_curve_arguments, parse_list, plot_panels, predict_speed, run_missing,
                             start_summary, train_curve)
from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.evaluation.coco_eval import evaluate_coco  # noqa: E402
from detseg.evaluation.coco_results import predictions_to_coco_results  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.ops.letterbox import boxes_to_original  # noqa: E402
from detseg.models.ops.nms import NmsConfig, batched_nms  # noqa: E402
from detseg.models.ssd.detector import build_ssd_detector  # noqa: E402
from detseg.models.ssd.head import SsdHeadConfig  # noqa: E402
from detseg.models.yolo.detector import build_yolo_detector  # noqa: E402
from detseg.models.yolo.head import YoloHeadConfig  # noqa: E402
from detseg.pipelines.augment import AugmentConfig  # noqa: E402
from detseg.pipelines.dataset import build_dataset, build_eval_dataset  # noqa: E402

MODELS = ("yolo", "kerascv_yolov8", "ssd")
OURS, THEIRS = "yolo", "kerascv_yolov8"
AUGMENTS = {"default": AugmentConfig(),
            "flip": AugmentConfig(crop=0.0, affine=0.0, color_jitter=0.0, blur=0.0)}
EVAL_NMS = NmsConfig(iou_threshold=0.6, score_threshold=0.001, max_detections=100)
SPEED_BATCHES = (1, 16)
TARGETS = (0.3, 0.5)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_curve_arguments(parser, MODELS, "yolo,kerascv_yolov8", "5e-4,1e-3,2e-3", cap_s=720.0, every_s=60.0)
    parser.add_argument("--augments", default="default", help=f"comma list of {tuple(AUGMENTS)} (default: default)")
    parser.add_argument("--num-images", type=int, default=600, help="synthetic images (70%% train, 15%% val)")
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image size on disk")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbone", default="tiny", help="backbone of our YOLO and SSD")
    parser.add_argument("--alpha", type=float, default=2.0, help="its width multiplier (default 2)")
    parser.add_argument("--yolo-neck", default="64,128,256", help="neck widths P3,P4,P5")
    parser.add_argument("--data-dir", default="runs/synthetic/bench_detectors")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_detectors"))
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tables and plot of the runs in --out/results.json (with --resume)")
    args = parse_curve_arguments(parser, argv, MODELS)
    args.augments = parse_list(args.augments)
    if unknown := [a for a in args.augments if a not in AUGMENTS]:
        parser.error(f"--augments: unknown {unknown}; choose from {tuple(AUGMENTS)}")
    args.resume = args.resume or args.report_only
    return args


# ----------------------------------------------------------------------------- models


def build_ours_yolo(args, num_classes: int, class_names, lr: float) -> tuple[keras.Model, callable]:
    backbone = build_backbone(args.backbone, (args.image_size,) * 2, alpha=args.alpha)
    config = YoloHeadConfig(neck_widths=tuple(parse_list(args.yolo_neck, int)), class_names=tuple(class_names),
                            score_threshold=EVAL_NMS.score_threshold, iou_threshold=EVAL_NMS.iou_threshold,
                            max_detections=EVAL_NMS.max_detections)
    model = build_yolo_detector(backbone, num_classes, config)
    model.compile(optimizer=keras.optimizers.Adam(lr, global_clipnorm=10.0))
    return model, tf.function(model.detect)


def build_ours_ssd(args, num_classes: int, class_names, lr: float) -> tuple[keras.Model, callable]:
    backbone = build_backbone(args.backbone, (args.image_size,) * 2, alpha=args.alpha)
    config = SsdHeadConfig(class_names=tuple(class_names), score_threshold=EVAL_NMS.score_threshold,
                           iou_threshold=EVAL_NMS.iou_threshold, max_detections=EVAL_NMS.max_detections)
    model = build_ssd_detector(backbone, num_classes, config)
    model.compile(optimizer=keras.optimizers.Adam(lr, global_clipnorm=10.0))
    return model, tf.function(model.detect)


def build_kerascv_yolov8(args, num_classes: int, class_names, lr: float) -> tuple[keras.Model, callable]:
    import keras_cv
    from keras_cv.src.models.object_detection.yolo_v8 import yolo_v8_detector as kcv

    backbone = keras_cv.models.YOLOV8Backbone(
        stackwise_channels=[32, 64, 128, 256], stackwise_depth=[1, 2, 2, 1], include_rescaling=True,
        activation="swish", input_shape=(args.image_size, args.image_size, 3))
    model = keras_cv.models.YOLOV8Detector(backbone=backbone, num_classes=num_classes,
                                           bounding_box_format="xyxy", fpn_depth=1)
    model.compile(box_loss="ciou", classification_loss="binary_crossentropy",
                  optimizer=keras.optimizers.Adam(lr, global_clipnorm=10.0), jit_compile=False)

    @tf.function
    def detect(images):
        # keras-cv's own decoding (DFL expectation, anchor points, strides; its class
        # outputs are sigmoid scores), then the same NMS as ours, so only the models differ.
        raw = model(images, training=False)
        points, strides = kcv.get_anchors(image_shape=images.shape[1:])
        distances = kcv.decode_regression_to_boxes(raw["boxes"])
        boxes = kcv.dist2bbox(distances, points) * strides[:, None]
        return batched_nms(boxes, raw["classes"], EVAL_NMS)

    return model, detect


BUILDERS = {"yolo": build_ours_yolo, "kerascv_yolov8": build_kerascv_yolov8, "ssd": build_ours_ssd}


# ----------------------------------------------------------------------------- measuring


def coco_metrics(detect, val, eval_batches) -> dict:
    """mAP of `detect` on the val split, boxes mapped back to original pixels."""
    image_ids, predictions = [], []
    for x, meta in eval_batches:
        out = {key: value.numpy() for key, value in detect(x).items()}
        boxes = boxes_to_original(out["boxes"], meta["letterbox"].numpy()).numpy()
        for row in np.flatnonzero(meta["valid"].numpy()):
            image_ids.append(int(meta["image_id"][row]))
            predictions.append({"boxes": boxes[row], "scores": out["scores"][row],
                                "classes": out["classes"][row], "num_detections": out["num_detections"][row]})
    report = evaluate_coco(val, predictions_to_coco_results(image_ids, predictions, val.label_map), "bbox",
                           progress=False)
    stats = report["stats_raw"]
    return {"mAP": max(stats[0], 0.0), "mAP50": max(stats[1], 0.0)}


def run_key(model: str, lr: float, augment: str) -> str:
    return f"{model} lr={lr:g} aug={augment}"


def run_one(model_name: str, lr: float, augment: str, train, val, args) -> dict:
    keras.utils.set_random_seed(args.seed)
    model, detect = BUILDERS[model_name](args, val.label_map.num_classes, val.label_map.names, lr)
    log(f"[{run_key(model_name, lr, augment)}] {model.count_params():,} parameters; {args.cap_cpu_s:.0f} CPU-s")
    batches = build_dataset(train, "detection", args.image_size, args.batch_size, augment=AUGMENTS[augment],
                            shuffle=True, seed=args.seed, repeat=True, drop_remainder=True)
    eval_batches = build_eval_dataset(val, "detection", args.image_size, args.batch_size).cache()
    curve = CpuBudgetCurve(args.cap_cpu_s, lr, lambda: coco_metrics(detect, val, eval_batches), args.every_cpu_s,
                           args.batch_size, log=log)
    result = {"model": model_name, "lr": lr, "augment": augment, "params": int(model.count_params()),
              **train_curve(model, batches, curve)}
    for batch in SPEED_BATCHES:
        result[f"predict_img_per_s_b{batch}"] = predict_speed(detect, args.image_size, batch)
    return result


def report(summary: dict, args) -> str:
    """The markdown tables: every run's end point and speed, then ours vs theirs at their best lr."""
    runs = summary["runs"]
    lines = ["| run | params | train img/CPU-s | mAP at cap | mAP50 at cap | predict img/s b1 | b16 |",
             "|---" * 7 + "|"]
    for key, run in runs.items():
        end = run["points"][-1]
        lines.append(f"| {key} | {run['params']:,} | {run['train_img_per_cpu_s']} | {end['mAP']:.3f} | "
                     f"{end['mAP50']:.3f} | {run['predict_img_per_s_b1']} | {run['predict_img_per_s_b16']} |")
    cap = args.cap_cpu_s
    budgets = [cap / 4, cap / 2, 3 * cap / 4, cap]
    for augment in args.augments:
        best = {}
        for model in args.models:
            candidates = {k: r for k, r in runs.items() if r["model"] == model and r["augment"] == augment}
            if candidates:
                best[model] = best_by_final(candidates, "mAP")
        if not best:
            continue
        summary.setdefault("best", {})[augment] = best
        curves = {best[m]: runs[best[m]]["points"] for m in best}
        lines += ["", f"Best learning rate of each model, augmentation `{augment}`:", ""]
        lines.append(comparison_table(curves, "mAP", best.get(OURS, ""), best.get(THEIRS, ""), budgets,
                                      list(TARGETS)))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    paths = ensure_synthetic(args.data_dir, num_images=args.num_images, image_size=args.source_size, seed=args.seed)
    train, val = load_coco(paths["train"]), load_coco(paths["val"])
    results_path = args.out / "results.json"
    summary = start_summary(args, len(train.images), len(val.images))
    jobs = {run_key(model, lr, augment): (lambda m=model, lr=lr, a=augment: run_one(m, lr, a, train, val, args))
            for augment in args.augments for model in args.models for lr in args.lrs}
    run_missing(summary, results_path, jobs, train=not args.report_only)
    table = report(summary, args)
    panels = {f"augment: {augment}": {k: r["points"] for k, r in summary["runs"].items() if r["augment"] == augment}
              for augment in args.augments if augment in summary.get("best", {})}
    bold = {key for best in summary.get("best", {}).values() for key in best.values()}
    plot_panels(args.out / "detector_curves.png", panels, "mAP", f"Detectors on synthetic shapes, "
                f"{args.image_size} px: val COCO mAP vs training CPU time (bold: best lr)", bold, list(TARGETS))
    write_json_atomic(summary, results_path)
    print(table)
    print(f"\nwrote {results_path} and {args.out / 'detector_curves.png'}; "
          f"load average before {summary['load_average_before']}, after {summary['load_average_after']}")
    return summary


if __name__ == "__main__":
    main()
