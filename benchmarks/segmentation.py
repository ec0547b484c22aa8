"""Semantic segmentation bars: U-Net and FCN-8s against keras-cv DeepLabV3+ on the synthetic shapes.

    .venv/bin/python benchmarks/segmentation.py --cpu-minutes 6 --image-size 256 --out /tmp/seg_bench

Every model trains from scratch (no pretrained weights offline) on the same synthetic
train split, with the same loss (`models.segmentation_losses.SegmentationLoss`: CE +
Dice), optimizer (Adam), batch size, augmentation (random flips and 90-degree rotations) and the same
budget of CPU time, then is scored on the val split with
`evaluation.semantic_metrics.SemanticSegmentationMetrics` (mIoU over background + 3
shape classes). The script prints each mIoU and our best / DeepLabV3+ ratio
(issue #6 bars: mIoU >= 0.75 for U-Net and FCN-8s, ratio >= 1.0).

Why CPU time, not wall-clock: the budget is the process's CPU seconds
(`time.process_time`, all threads), so models get the same compute even when other jobs
share the machine; wall-clock is printed beside it. The learning rate follows a cosine
over the spent fraction of the budget, so every model ends its budget annealed.

DeepLabV3+ is `keras_cv.models.DeepLabV3Plus` on a `ResNetBackbone` built from an
explicit config (bottleneck blocks, widths 8/16/32/64, one block per stage: ~142k
parameters, like the 130k of our `tiny` backbone; the keras-cv preset aliases would try to
download). Its segmentation head is the keras-cv default minus the softmax, so it returns
logits for the same loss. Images are decoded once by `pipelines.build_dataset` and held in
memory, so input cost does not differ between models.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import keras
import keras_cv
import numpy as np
import tensorflow as tf

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
OURS = ("unet", "fcn8s")
MIOU_BAR = 0.75
RATIO_BAR = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-minutes", type=float, default=6.0, help="CPU-time budget per model")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--num-images", type=int, default=3000, help="synthetic images (70/15/15 split)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help=f"comma list of {MODEL_NAMES}")
    parser.add_argument("--data-dir", default="/tmp/detseg_seg_bench/data")
    parser.add_argument("--out", default=None, help="folder for results.json")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


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


class CpuBudget(keras.callbacks.Callback):
    """Stops `fit` after `seconds` of process CPU time; cosine learning rate over that budget.

    The clock starts after the first step: tracing the training graph costs each model a
    different, one-off amount (keras-cv's DeepLabV3+ the most) that says nothing about
    how well it learns per unit of compute. It is reported as `first_step_cpu_seconds`.
    """

    def __init__(self, seconds: float, peak_lr: float, warmup_fraction: float = 0.03):
        super().__init__()
        self.seconds, self.peak_lr, self.warmup_fraction = seconds, peak_lr, warmup_fraction
        self.start_cpu = self.start_wall = None
        self.first_step_cpu = 0.0
        self.steps = 0

    def spent(self) -> float:
        if self.start_cpu is None:
            return 0.0
        return (time.process_time() - self.start_cpu) / self.seconds

    def on_train_begin(self, logs=None):
        self.first_step_cpu = time.process_time()

    def on_train_batch_begin(self, batch, logs=None):
        fraction = min(self.spent(), 1.0)
        warmup = min(1.0, fraction / self.warmup_fraction)
        lr = self.peak_lr * warmup * 0.5 * (1.0 + math.cos(math.pi * fraction))
        self.model.optimizer.learning_rate.assign(max(lr, 1e-3 * self.peak_lr))

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.start_cpu is None:
            self.start_cpu, self.start_wall = time.process_time(), time.perf_counter()
            self.first_step_cpu = self.start_cpu - self.first_step_cpu
        if self.spent() >= 1.0:
            self.model.stop_training = True

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.start_wall


def train(model: keras.Model, batches: tf.data.Dataset, budget: CpuBudget) -> dict:
    model.compile(optimizer=keras.optimizers.Adam(budget.peak_lr), loss=SegmentationLoss(),
                  jit_compile=False)  # XLA compiles slowly and runs no faster on this CPU
    history = model.fit(batches, epochs=10_000, steps_per_epoch=25, callbacks=[budget], shuffle=False, verbose=0)
    losses = history.history["loss"]
    return {"steps": budget.steps - 1, "cpu_seconds": time.process_time() - budget.start_cpu,
            "wall_seconds": budget.wall_seconds, "first_step_cpu_seconds": budget.first_step_cpu, "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1]}


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


def run_one(name: str, args, train_data, val_data, class_names) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = build_model(name, len(class_names), args.image_size)
    budget = CpuBudget(args.cpu_minutes * 60.0, args.lr)
    training = train(model, training_batches(*train_data, args.batch_size, args.seed), budget)
    scores = evaluate(model, *val_data, class_names, args.batch_size)
    record = {"model": name, "parameters": int(model.count_params()), **training, **scores,
              "train_images_per_cpu_second": training["steps"] * args.batch_size / training["cpu_seconds"]}
    print(f"{name:14s} mIoU {scores['mean_iou']:.4f}  pixel acc {scores['pixel_accuracy']:.4f}  "
          f"params {record['parameters']:,}  steps {training['steps']}  "
          f"cpu {training['cpu_seconds']:.0f}s  wall {training['wall_seconds']:.0f}s  "
          f"loss {training['first_epoch_loss']:.3f} -> {training['last_epoch_loss']:.3f}", flush=True)
    return record


def summary(records: dict[str, dict]) -> dict:
    """Our best mIoU over DeepLabV3+'s, and which bars pass."""
    ours = {name: r["mean_iou"] for name, r in records.items() if name in OURS}
    out = {"miou_bar": MIOU_BAR, "ratio_bar": RATIO_BAR,
           "ours_meet_miou_bar": {name: value >= MIOU_BAR for name, value in ours.items()}}
    if ours and "deeplabv3plus" in records:
        best = max(ours, key=ours.get)
        out.update(best=best, ratio=ours[best] / records["deeplabv3plus"]["mean_iou"])
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    data_dir = Path(args.data_dir)
    ensure_synthetic(data_dir, num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    train_images, train_labels, names_ = split_arrays(data_dir / "annotations" / "instances_train.json",
                                                      args.image_size)
    val_images, val_labels, _ = split_arrays(data_dir / "annotations" / "instances_val.json", args.image_size)
    class_names = [BACKGROUND_NAME, *names_]
    print(f"synthetic {args.image_size}px: {len(train_images)} train / {len(val_images)} val images; "
          f"budget {args.cpu_minutes} CPU-min per model, batch {args.batch_size}, lr {args.lr}", flush=True)
    records = {name: run_one(name, args, (train_images, train_labels), (val_images, val_labels), class_names)
               for name in names}
    result = summary(records)
    if "ratio" in result:
        print(f"best ours ({result['best']}) / DeepLabV3+ mIoU = {result['ratio']:.3f} "
              f"(bar >= {RATIO_BAR}); mIoU >= {MIOU_BAR}: {result['ours_meet_miou_bar']}", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        payload = {"args": vars(args), "models": records, "summary": result}
        (Path(args.out) / "results.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
