"""Semantic segmentation as learning curves: U-Net and FCN-8s against keras-cv's DeepLabV3+, each at its best lr.

    .venv/bin/python benchmarks/segmentation.py --out runs/bench_segmentation          # ~30 min on 2 cores
    .venv/bin/python benchmarks/segmentation.py --cap-cpu-s 90 --every-cpu-s 30 --lrs 3e-3 --out /tmp/seg   # quick look

Every model trains from scratch (no pretrained weights offline) on the same synthetic
train split, with the same loss (`models.segmentation_losses.SegmentationLoss`: CE +
Dice), Adam, batch size and augmentation (random flips and 90-degree rotations), for every
learning rate of `--lrs`. The CPU-time budget, schedule and sampling are
`learning_curves.py`'s: val mIoU (`evaluation.semantic_metrics`, background + 3 shape
classes) every `--every-cpu-s` training CPU-seconds up to `--cap-cpu-s`. The best lr of
each model is the one with the highest mIoU at the cap; the table compares our better
model against DeepLabV3+ at several budgets and gives the CPU time each needs to reach
mIoU 0.5 and 0.75.

DeepLabV3+ is `keras_cv.models.DeepLabV3Plus` on a `ResNetBackbone` built from an
explicit config (bottleneck blocks, widths 8/16/32/64, one block per stage: ~142k
parameters, like the 130k of our `tiny` backbone; the keras-cv preset aliases would try to
download). Its segmentation head is the keras-cv default minus the softmax, so it returns
logits for the same loss. Images are decoded once by `pipelines.build_dataset` and held in
memory, so input cost does not differ between models.

Writes `--out/results.json` after every run (`--resume` skips runs already there) and
`--out/segmentation_curves.png`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_cv
import numpy as np
import tensorflow as tf

from learning_curves import (CpuBudgetCurve, add_curve_arguments, best_by_final, comparison_table, log,  # noqa: E402
                             parse_curve_arguments, plot_panels, run_missing, start_summary, train_curve)
from detseg.core.atomic_files import write_json_atomic
from detseg.core.contract import BACKGROUND_NAME, SEMANTIC
from detseg.data.coco import load_coco
from detseg.data.synthetic import ensure_synthetic
from detseg.evaluation.semantic_metrics import SemanticSegmentationMetrics
from detseg.models.backbones.registry import build_backbone
from detseg.models.segmentation.fcn import FCN
from detseg.models.segmentation.losses import SegmentationLoss
from detseg.models.segmentation.unet import UNet
from detseg.pipelines.dataset import build_dataset

MODEL_NAMES = ("unet", "fcn8s", "deeplabv3plus")
OURS, THEIRS = ("unet", "fcn8s"), "deeplabv3plus"
TARGETS = (0.5, 0.75)  # mIoU levels whose CPU cost the table reports


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_curve_arguments(parser, MODEL_NAMES, ",".join(MODEL_NAMES), "1e-3,3e-3", cap_s=240.0, every_s=40.0)
    parser.add_argument("--num-images", type=int, default=1000, help="synthetic images (70/15/15 split)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default="runs/synthetic/bench_segmentation")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_segmentation"))
    return parse_curve_arguments(parser, argv, MODEL_NAMES)


def split_arrays(annotations: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split decoded by the pipeline: images uint8 `[N, S, S, 3]`, labels uint8 `[N, S, S]`."""
    dataset = load_coco(annotations)
    images, labels = [], []
    for x, y in build_dataset(dataset, SEMANTIC, image_size, batch_size=32):
        images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels), list(dataset.label_map.names)


def random_dihedral(image: tf.Tensor, label: tf.Tensor, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One of the 8 flips/rotations by 90 degrees, the same for image `[S, S, 3]` and label `[S, S]`.

    The shape classes (circle, rectangle, triangle) keep their names under all eight, and
    the transforms cost nothing, unlike resampling augmentations.
    """
    label = label[..., tf.newaxis]
    draws = tf.random.uniform((3,), seed=seed) < 0.5
    for draw, transform in zip(tf.unstack(draws), (lambda t: tf.reverse(t, [0]), lambda t: tf.reverse(t, [1]),
                                                   lambda t: tf.transpose(t, [1, 0, 2]))):
        image, label = tf.cond(draw, lambda: (transform(image), transform(label)), lambda: (image, label))
    return image, label[..., 0]


def training_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled, repeated, randomly flipped/rotated: `(float32 [B, S, S, 3], uint8 [B, S, S])`."""
    def augment(image, label):
        image, label = random_dihedral(image, label, seed)
        return tf.cast(image, tf.float32), label

    batches = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed)
    batches = batches.repeat().map(augment, num_parallel_calls=2).batch(batch_size, drop_remainder=True)
    return batches.prefetch(2)


def deeplab_v3_plus(num_classes: int, image_size: int) -> keras.Model:
    """keras-cv DeepLabV3+ on a ~142k-parameter ResNet (explicit config), returning logits."""
    backbone = keras_cv.models.ResNetBackbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1], stackwise_strides=[1, 2, 2, 2],
        block_type="block", include_rescaling=True, input_shape=(image_size, image_size, 3))
    head = keras.Sequential([
        keras.layers.Conv2D(64, 1, use_bias=False, name="segmentation_head_conv"),
        keras.layers.BatchNormalization(name="segmentation_head_norm"),
        keras.layers.ReLU(name="segmentation_head_relu"),
        keras.layers.UpSampling2D(4, interpolation="bilinear"),
        keras.layers.Conv2D(num_classes, 1, use_bias=False, dtype="float32", name="segmentation_output"),
    ])
    pyramid = keras_cv.layers.SpatialPyramidPooling(dilation_rates=[6, 12, 18], num_channels=64)
    return keras_cv.models.DeepLabV3Plus(backbone, num_classes, projection_filters=24,
                                         spatial_pyramid_pooling=pyramid, segmentation_head=head)


def build_model(name: str, num_classes: int, image_size: int) -> keras.Model:
    size = (image_size, image_size)
    if name == "unet":
        # Decoder stops at stride 2; the logits are bilinearly upsampled x2 (see models.unet).
        return UNet(num_classes, backbone=build_backbone("tiny", size), decoder_filters=(64, 48, 32, 16))
    if name == "fcn8s":
        return FCN(build_backbone("tiny", size), num_classes, variant="fcn8s", head_filters=128)
    if name == "deeplabv3plus":
        return deeplab_v3_plus(num_classes, image_size)
    raise SystemExit(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, class_names: list[str],
             batch_size: int) -> dict:
    """mIoU, pixel accuracy and per-class IoU of the argmax of the logits (eager calls: few images)."""
    metrics = SemanticSegmentationMetrics(len(class_names), class_names)
    for start in range(0, len(images), batch_size):
        logits = model(tf.cast(images[start:start + batch_size], tf.float32), training=False)
        metrics.update(labels[start:start + batch_size], np.argmax(keras.ops.convert_to_numpy(logits), axis=-1))
    result = metrics.result()
    return {"mean_iou": result["mean_iou"], "pixel_accuracy": result["pixel_accuracy"],
            "per_class_iou": {c["name"]: c["iou"] for c in result["per_class"]}}


def run_key(model: str, lr: float) -> str:
    return f"{model} lr={lr:g}"


def run_one(name: str, lr: float, args, train_data, val_data, class_names) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = build_model(name, len(class_names), args.image_size)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=SegmentationLoss(),
                  jit_compile=False)  # XLA compiles slowly and runs no faster on this CPU
    log(f"[{run_key(name, lr)}] {model.count_params():,} parameters; {args.cap_cpu_s:.0f} CPU-s")

    def val_metrics() -> dict:
        scores = evaluate(model, *val_data, class_names, args.batch_size)
        return {"mIoU": scores["mean_iou"], "pixel_acc": scores["pixel_accuracy"]}

    curve = CpuBudgetCurve(args.cap_cpu_s, lr, val_metrics, args.every_cpu_s, args.batch_size, log=log)
    result = {"model": name, "lr": lr, "params": int(model.count_params()),
              **train_curve(model, training_batches(*train_data, args.batch_size, args.seed), curve)}
    result["per_class_iou"] = evaluate(model, *val_data, class_names, args.batch_size)["per_class_iou"]
    return result


def report(summary: dict, args) -> str:
    """Markdown: every run's end point, then each model at its best lr, ours vs DeepLabV3+."""
    runs = summary["runs"]
    lines = ["| run | params | train img/CPU-s | mIoU at cap | pixel acc | IoU per class |", "|---" * 6 + "|"]
    for key, run in runs.items():
        end = run["points"][-1]
        per_class = " / ".join(f"{v:.2f}" for v in run["per_class_iou"].values())
        lines.append(f"| {key} | {run['params']:,} | {run['train_img_per_cpu_s']} | {end['mIoU']:.3f} | "
                     f"{end['pixel_acc']:.3f} | {per_class} |")
    best = {model: best_by_final({k: r for k, r in runs.items() if r["model"] == model}, "mIoU")
            for model in args.models if any(r["model"] == model for r in runs.values())}
    summary["best"] = best
    ours = [best[m] for m in OURS if m in best]
    top = max(ours, key=lambda k: runs[k]["points"][-1]["mIoU"]) if ours else ""
    cap = args.cap_cpu_s
    lines += ["", "Best learning rate of each model (ratio row: our best model / DeepLabV3+):", ""]
    lines.append(comparison_table({best[m]: runs[best[m]]["points"] for m in best}, "mIoU", top,
                                  best.get(THEIRS, ""), [cap / 4, cap / 2, 3 * cap / 4, cap], list(TARGETS)))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    ensure_synthetic(data_dir, num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    train_images, train_labels, names_ = split_arrays(data_dir / "annotations" / "instances_train.json",
                                                      args.image_size)
    val_images, val_labels, _ = split_arrays(data_dir / "annotations" / "instances_val.json", args.image_size)
    class_names = [BACKGROUND_NAME, *names_]
    log(f"synthetic {args.image_size}px: {len(train_images)} train / {len(val_images)} val images; "
        f"{args.cap_cpu_s:.0f} CPU-s per run, batch {args.batch_size}, lrs {args.lrs}")
    results_path = args.out / "results.json"
    summary = start_summary(args, len(train_images), len(val_images))
    run_missing(summary, results_path,
                {run_key(name, lr): (lambda n=name, lr=lr: run_one(n, lr, args, (train_images, train_labels),
                                                                    (val_images, val_labels), class_names))
                 for name in args.models for lr in args.lrs})
    table = report(summary, args)
    plot_panels(args.out / "segmentation_curves.png", {"every run": {k: r["points"] for k, r in summary["runs"].items()}},
                "mIoU", f"Semantic segmentation on synthetic shapes, {args.image_size} px: val mIoU vs training CPU "
                f"time (bold: best lr)", set(summary["best"].values()), list(TARGETS))
    write_json_atomic(summary, results_path)
    print(table)
    print(f"\nwrote {results_path} and {args.out / 'segmentation_curves.png'}")
    return summary


if __name__ == "__main__":
    main()
