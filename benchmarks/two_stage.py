"""Two-stage detector bars: Faster R-CNN bbox mAP@.5 and Mask R-CNN segm mAP@.5 on synthetic shapes.

    .venv/bin/python benchmarks/two_stage.py --minutes 15 --image-size 256 --out runs/two_stage.json

For each model: train from scratch (tiny backbone, BatchNorm trainable, Adam, graph mode)
on the synthetic train split for a wall-clock budget of `--minutes` (tracing included),
then evaluate on the val split with pycocotools through `evaluation.evaluate_coco`
(bbox for both, segm for Mask R-CNN) and time inference (predict incl. NMS and mask
pasting) at batch 1 and `--batch-size`. `--models yolo` trains the one-stage YOLO of the
same backbone the same way, for the throughput comparison. Prints one JSON summary (and writes `--out`).
The learning rate drops 10x for the last quarter of the budget.

Bars (issue #8): Faster R-CNN bbox AP50 >= 0.5; Mask R-CNN segm AP50 >= 0.4. The CPU
load average is recorded: on a shared machine the budget buys fewer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.evaluation.coco_eval import evaluate_coco  # noqa: E402
from detseg.evaluation.coco_results import predictions_to_coco_results  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.rcnn.faster_rcnn import build_faster_rcnn  # noqa: E402
from detseg.models.rcnn.mask_rcnn import build_mask_rcnn  # noqa: E402
from detseg.pipelines.dataset import build_dataset, build_eval_dataset  # noqa: E402
from detseg.models.ops.letterbox import boxes_to_original, masks_to_original  # noqa: E402

MAX_OBJECTS = 16  # the synthetic images hold at most 6 shapes


def _two_stage(builder):
    def build(backbone, num_classes: int, max_detections: int):
        nms = {"iou_threshold": 0.5, "score_threshold": 0.05, "max_detections": max_detections}
        return builder(backbone, num_classes, options={"nms": nms})
    return build


def _yolo(backbone, num_classes: int, max_detections: int):
    """The one-stage reference of the same backbone (engineer J's YOLO, default head)."""
    from detseg.models.yolo.detector import build_yolo_detector

    return build_yolo_detector(backbone, num_classes)


BUILDERS = {"faster_rcnn": (_two_stage(build_faster_rcnn), "detection"),
            "mask_rcnn": (_two_stage(build_mask_rcnn), "instance"),
            "yolo": (_yolo, "detection")}


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` when the budget is spent; drops the LR 10x for its last quarter."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = None
        self.dropped = False
        self.steps = 0
        self.first_step_seconds = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        elapsed = time.perf_counter() - self.start
        if self.first_step_seconds is None:
            self.first_step_seconds = elapsed
        if not self.dropped and elapsed > 0.75 * self.seconds:
            self.model.optimizer.learning_rate.assign(self.model.optimizer.learning_rate * 0.1)
            self.dropped = True
        if elapsed > self.seconds:
            self.model.stop_training = True


def train(name: str, train_split, args) -> tuple[keras.Model, dict]:
    builder, task = BUILDERS[name]
    keras.utils.set_random_seed(args.seed)
    size = args.image_size
    backbone = build_backbone("tiny", (size, size))
    model = builder(backbone, train_split.label_map.num_classes, args.max_detections)
    model.compile(optimizer=keras.optimizers.Adam(args.lr, clipnorm=10.0))
    batches = build_dataset(train_split, task, size, args.batch_size, shuffle=True, seed=args.seed,
                            max_objects=MAX_OBJECTS, repeat=True, drop_remainder=True)
    steps_per_epoch = max(1, len(train_split.images) // args.batch_size)
    budget = TimeBudget(args.minutes * 60.0)
    history = model.fit(batches, epochs=10_000, steps_per_epoch=steps_per_epoch, callbacks=[budget], verbose=2)
    seconds = time.perf_counter() - budget.start
    steady = max(seconds - (budget.first_step_seconds or 0.0), 1e-9)
    last = {key: float(values[-1]) for key, values in history.history.items()}
    return model, {"train_seconds": round(seconds, 1), "steps": budget.steps,
                   "epochs": len(history.history.get("loss", [])),
                   "first_step_seconds": round(budget.first_step_seconds or 0.0, 1),
                   "train_images_per_second": round((budget.steps - 1) * args.batch_size / steady, 2),
                   "last_epoch_losses": last}


def predictions(model, split, task: str, args):
    """`(image_ids, per-image prediction dicts in original pixels)` over the val split."""
    detect = tf.function(model.predict_step)
    ids, preds = [], []
    for x, meta in build_eval_dataset(split, task, args.image_size, args.batch_size, max_objects=MAX_OBJECTS):
        out = {k: v.numpy() for k, v in detect(x).items()}
        for i in np.flatnonzero(meta["valid"].numpy()):
            transform = meta["letterbox"].numpy()[i]
            count = int(out["num_detections"][i])
            pred = {"boxes": boxes_to_original(out["boxes"][i, :count], transform).numpy(),
                    "scores": out["scores"][i, :count], "classes": out["classes"][i, :count]}
            if "masks" in out:
                pred["masks"] = masks_to_original(out["masks"][i, :count], transform, args.image_size).numpy()
            ids.append(int(meta["image_id"].numpy()[i]))
            preds.append(pred)
    return ids, preds


def inference_speed(model, size: int, batch: int, repeats: int = 5) -> float:
    """Images per second of `predict_step` (detections incl. NMS) at `batch`, after one warm-up call."""
    detect = tf.function(model.predict_step)
    x = tf.random.uniform([batch, size, size, 3], 0, 255)
    detect(x)
    start = time.perf_counter()
    for _ in range(repeats):
        {k: v.numpy() for k, v in detect(x).items()}
    return round(batch * repeats / (time.perf_counter() - start), 2)


def run_model(name: str, paths: dict, args) -> dict:
    train_split, val_split = load_coco(paths["train"]), load_coco(paths["val"])
    load_before = os.getloadavg()
    model, result = train(name, train_split, args)
    result["load_average_before"] = [round(v, 2) for v in load_before]
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    task = BUILDERS[name][1]
    ids, preds = predictions(model, val_split, task, args)
    iou_types = ("bbox", "segm") if task == "instance" else ("bbox",)
    for iou_type in iou_types:
        results = predictions_to_coco_results(ids, preds, val_split.label_map)
        stats = evaluate_coco(paths["val"], results, iou_type, progress=False)["stats"]
        result[f"{iou_type}_AP50"] = stats["AP50"]
        result[f"{iou_type}_AP"] = stats["AP"]
    result["infer_images_per_second_b1"] = inference_speed(model, args.image_size, 1)
    result[f"infer_images_per_second_b{args.batch_size}"] = inference_speed(model, args.image_size, args.batch_size)
    result["parameters"] = int(model.count_params())
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per model (wall clock)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--num-images", type=int, default=600, help="synthetic images (70%% train)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-detections", type=int, default=50,
                        help="detections per image (masks are computed and pasted for each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="faster_rcnn,mask_rcnn")
    parser.add_argument("--data-dir", default="runs/synthetic/two_stage_benchmark")
    parser.add_argument("--out", default=None, help="also write the JSON summary here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = ensure_synthetic(Path(args.data_dir) / f"n{args.num_images}_s{args.image_size}",
                             num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    summary = {"settings": vars(args), "cpu_count": os.cpu_count(), "models": {}}
    for name in args.models.split(","):
        summary["models"][name] = run_model(name, paths, args)
        print(json.dumps({name: summary["models"][name]}), flush=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
