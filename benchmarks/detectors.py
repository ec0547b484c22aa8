"""One-stage detectors, side by side: our YOLO vs keras-cv's YOLOv8, and our SSD.

    .venv/bin/python benchmarks/detectors.py --minutes 9 --out runs/bench_detectors
    .venv/bin/python benchmarks/detectors.py --minutes 1 --models yolo,kerascv_yolov8   # quick look

Every model is trained by the SAME code on the SAME batches (the synthetic shapes set from
`data.synthetic.ensure_synthetic`, the `pipelines` detection pipeline with its default
augmentation, letterboxed to `--image-size`), from scratch, with Adam and a cosine
learning rate laid over the budget, until its CPU-time budget is spent:

    budget = --minutes * 60 * cores  CPU-seconds of this process

(on an idle machine: `--minutes` of wall-clock). CPU time rather than wall-clock keeps the
comparison fair when other jobs share the machine. Then each model predicts the val split
(decode + the same class-aware NMS, `models.nms`, for all), boxes go back to original
pixels, and pycocotools (`evaluation.evaluate_coco`) scores them.

keras-cv's model is `YOLOV8Detector(YOLOV8Backbone(stackwise_channels=[32, 64, 128, 256],
stackwise_depth=[1, 2, 2, 1], include_rescaling=True, activation="swish"), fpn_depth=1)`,
built from explicit configs (its preset aliases download weights).

Prints one table and the ratios (ours / keras-cv) of COCO mAP@[.5:.95] and of training
images/s, SSD's mAP@.5, and predict throughput (incl. NMS) at batch 1 and 16; writes the
same as JSON to `--out/results.json`. Run it in the background (`nohup ... &`): the default
budget is small, `--minutes 9` per model takes about half an hour for three models.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.evaluation.coco_eval import evaluate_coco  # noqa: E402
from detseg.evaluation.coco_results import predictions_to_coco_results  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.ops.nms import NmsConfig, batched_nms  # noqa: E402
from detseg.models.ssd.detector import build_ssd_detector  # noqa: E402
from detseg.models.ssd.head import SsdHeadConfig  # noqa: E402
from detseg.models.yolo.detector import build_yolo_detector  # noqa: E402
from detseg.models.yolo.head import YoloHeadConfig  # noqa: E402
from detseg.pipelines.augment import AugmentConfig  # noqa: E402
from detseg.pipelines.dataset import build_dataset, build_eval_dataset  # noqa: E402
from detseg.models.ops.letterbox import boxes_to_original  # noqa: E402

MODELS = ("yolo", "kerascv_yolov8", "ssd")
EVAL_NMS = NmsConfig(iou_threshold=0.6, score_threshold=0.001, max_detections=100)
MIN_LR_FRACTION = 0.05
SPEED_BATCHES = (1, 16)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="training budget per model, in minutes of all cores (default 2)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    parser.add_argument("--image-size", type=int, default=128, help="model input size (default 128)")
    parser.add_argument("--num-images", type=int, default=600, help="synthetic images (70%% train)")
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image size on disk")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    parser.add_argument("--backbone", default="tiny", help="backbone of our YOLO and SSD")
    parser.add_argument("--alpha", type=float, default=2.0, help="its width multiplier (default 2)")
    parser.add_argument("--yolo-neck", default="64,128,256", help="neck widths P3,P4,P5")
    parser.add_argument("--data-dir", default="runs/synthetic/bench_detectors")
    parser.add_argument("--out", default="runs/bench_detectors")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- budget


class CpuBudget(keras.callbacks.Callback):
    """Stops `fit` once the process has used `budget_s` CPU-seconds; cosine LR over the budget.

    The clock starts after the first step, which traces and builds the training graph (a
    one-off cost of every model, reported apart as `first_step_cpu_s`).
    """

    def __init__(self, budget_s: float, peak_lr: float, batch_size: int):
        super().__init__()
        self.budget_s, self.peak_lr, self.batch_size = budget_s, peak_lr, batch_size
        self.steps = 0
        self.cpu_start = self.wall_start = self.first_step_cpu = None
        self.last_loss = None

    def used(self) -> float:
        return 0.0 if self.cpu_start is None else time.process_time() - self.cpu_start

    def on_train_begin(self, logs=None):
        self.first_step_cpu = time.process_time()

    def on_train_batch_begin(self, batch, logs=None):
        fraction = min(self.used() / self.budget_s, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        self.model.optimizer.learning_rate.assign(self.peak_lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine))

    def on_train_batch_end(self, batch, logs=None):
        if self.cpu_start is None:  # the tracing step: not counted
            self.first_step_cpu = time.process_time() - self.first_step_cpu
            self.cpu_start, self.wall_start = time.process_time(), time.perf_counter()
            return
        self.steps += 1
        self.last_loss = None if logs is None else float(logs.get("loss", float("nan")))
        if self.used() >= self.budget_s:
            self.model.stop_training = True

    def summary(self) -> dict:
        wall = time.perf_counter() - self.wall_start
        cpu = self.used()
        images = self.steps * self.batch_size
        cores = os.cpu_count() or 1
        return {"steps": self.steps, "images": images, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                "first_step_cpu_s": round(self.first_step_cpu, 1),
                "train_img_per_s_wall": round(images / wall, 2),
                # images per second of the whole machine's CPU: fair under shared load
                "train_img_per_s_cpu": round(images / (cpu / cores), 2),
                "final_loss": self.last_loss}


def train_within_budget(model, train, args, budget_s: float) -> dict:
    batches = build_dataset(train, "detection", args.image_size, args.batch_size, augment=AugmentConfig(),
                            shuffle=True, seed=args.seed, repeat=True, drop_remainder=True)
    budget = CpuBudget(budget_s, args.lr, args.batch_size)
    # Epochs of 50 steps only so the budget check and progress lines come regularly.
    model.fit(batches, epochs=1_000_000, steps_per_epoch=50, callbacks=[budget], verbose=0)
    return budget.summary()


# ----------------------------------------------------------------------------- models


def build_ours_yolo(args, num_classes: int, class_names) -> tuple[keras.Model, callable]:
    backbone = build_backbone(args.backbone, (args.image_size,) * 2, alpha=args.alpha)
    config = YoloHeadConfig(neck_widths=tuple(int(w) for w in args.yolo_neck.split(",")),
                            class_names=tuple(class_names), score_threshold=EVAL_NMS.score_threshold,
                            iou_threshold=EVAL_NMS.iou_threshold, max_detections=EVAL_NMS.max_detections)
    model = build_yolo_detector(backbone, num_classes, config)
    model.compile(optimizer=keras.optimizers.Adam(args.lr, global_clipnorm=10.0))
    return model, tf.function(model.detect)


def build_ours_ssd(args, num_classes: int, class_names) -> tuple[keras.Model, callable]:
    backbone = build_backbone(args.backbone, (args.image_size,) * 2, alpha=args.alpha)
    config = SsdHeadConfig(class_names=tuple(class_names), score_threshold=EVAL_NMS.score_threshold,
                           iou_threshold=EVAL_NMS.iou_threshold, max_detections=EVAL_NMS.max_detections)
    model = build_ssd_detector(backbone, num_classes, config)
    model.compile(optimizer=keras.optimizers.Adam(args.lr, global_clipnorm=10.0))
    return model, tf.function(model.detect)


def build_kerascv_yolov8(args, num_classes: int, class_names) -> tuple[keras.Model, callable]:
    import keras_cv
    from keras_cv.src.models.object_detection.yolo_v8 import yolo_v8_detector as kcv

    backbone = keras_cv.models.YOLOV8Backbone(
        stackwise_channels=[32, 64, 128, 256], stackwise_depth=[1, 2, 2, 1], include_rescaling=True,
        activation="swish", input_shape=(args.image_size, args.image_size, 3))
    model = keras_cv.models.YOLOV8Detector(backbone=backbone, num_classes=num_classes,
                                           bounding_box_format="xyxy", fpn_depth=1)
    model.compile(box_loss="ciou", classification_loss="binary_crossentropy",
                  optimizer=keras.optimizers.Adam(args.lr, global_clipnorm=10.0), jit_compile=False)

    @tf.function
    def detect(images):
        # keras-cv's own decoding (DFL expectation, anchor points, strides), then the
        # same NMS as ours, so only the models differ.
        raw = model(images, training=False)
        points, strides = kcv.get_anchors(image_shape=images.shape[1:])
        distances = kcv.decode_regression_to_boxes(raw["boxes"])
        boxes = kcv.dist2bbox(distances, points) * strides[:, None]
        return batched_nms(boxes, raw["classes"], EVAL_NMS)

    return model, detect


BUILDERS = {"yolo": build_ours_yolo, "kerascv_yolov8": build_kerascv_yolov8, "ssd": build_ours_ssd}


# ----------------------------------------------------------------------------- measuring


def coco_metrics(detect, val, args) -> dict:
    """mAP of `detect` on the val split, boxes mapped back to original pixels."""
    batches = build_eval_dataset(val, "detection", args.image_size, args.batch_size)
    image_ids, predictions = [], []
    for x, meta in batches:
        out = {key: value.numpy() for key, value in detect(x).items()}
        boxes = boxes_to_original(out["boxes"], meta["letterbox"].numpy()).numpy()
        for row in np.flatnonzero(meta["valid"].numpy()):
            image_ids.append(int(meta["image_id"][row]))
            predictions.append({"boxes": boxes[row], "scores": out["scores"][row],
                                "classes": out["classes"][row], "num_detections": out["num_detections"][row]})
    report = evaluate_coco(val, predictions_to_coco_results(image_ids, predictions, val.label_map), "bbox",
                           progress=False)
    stats = report["stats_raw"]
    return {"mAP": round(stats[0], 4), "mAP50": round(stats[1], 4), "mAP75": round(stats[2], 4),
            "num_detections": report["num_detections"]}


def inference_speed(detect, image_size: int, batch: int, seconds: float = 8.0) -> float:
    """Images/s of `detect` (forward + decode + NMS) on random pixels, after a warm-up call."""
    images = tf.random.uniform([batch, image_size, image_size, 3], 0, 255, seed=1)
    detect(images)["num_detections"].numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        detect(images)["num_detections"].numpy()
        count += batch
    return round(count / (time.perf_counter() - start), 1)


def run_model(name: str, train, val, args, budget_s: float) -> dict:
    keras.utils.set_random_seed(args.seed)
    model, detect = BUILDERS[name](args, val.label_map.num_classes, val.label_map.names)
    print(f"[{name}] {model.count_params():,} parameters; training for {budget_s:.0f} CPU-s", flush=True)
    result = {"params": int(model.count_params()), **train_within_budget(model, train, args, budget_s)}
    print(f"[{name}] trained: {result}", flush=True)
    result.update(coco_metrics(detect, val, args))
    for batch in SPEED_BATCHES:
        result[f"predict_img_per_s_b{batch}"] = inference_speed(detect, args.image_size, batch)
    print(f"[{name}] {result}", flush=True)
    return result


def _ratio(ours, theirs):
    return None if not theirs else round(ours / theirs, 3)


def print_table(results: dict) -> None:
    columns = ("params", "steps", "train_img_per_s_cpu", "train_img_per_s_wall", "mAP", "mAP50",
               "predict_img_per_s_b1", "predict_img_per_s_b16")
    print("\n| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(str(row.get(c)) for c in columns) + " |")


def main(argv=None) -> dict:
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {MODELS}")
    paths = ensure_synthetic(args.data_dir, num_images=args.num_images, image_size=args.source_size, seed=args.seed)
    train, val = load_coco(paths["train"]), load_coco(paths["val"])
    cores = os.cpu_count() or 1
    budget_s = args.minutes * 60 * cores
    load_before = os.getloadavg()
    results = {name: run_model(name, train, val, args, budget_s) for name in names}
    summary = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "cores": cores,
               "cpu_budget_s_per_model": budget_s, "image_size": args.image_size,
               "train_images": len(train.images), "val_images": len(val.images),
               "load_average_before": load_before, "load_average_after": os.getloadavg(), "models": results}
    if "yolo" in results and "kerascv_yolov8" in results:
        ours, theirs = results["yolo"], results["kerascv_yolov8"]
        summary["yolo_vs_kerascv_map_ratio"] = _ratio(ours["mAP"], theirs["mAP"])
        summary["yolo_vs_kerascv_train_speed_ratio"] = _ratio(ours["train_img_per_s_cpu"], theirs["train_img_per_s_cpu"])
    print_table(results)
    for key in ("yolo_vs_kerascv_map_ratio", "yolo_vs_kerascv_train_speed_ratio"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    if "ssd" in results:
        print(f"ssd mAP@.5: {results['ssd']['mAP50']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"written {out / 'results.json'}; load average before {load_before}, after {os.getloadavg()}")
    return summary


if __name__ == "__main__":
    main()
