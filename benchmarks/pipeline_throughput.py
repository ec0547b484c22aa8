"""How fast the training input pipeline is, and how much faster than training needs.

Measures, in one run on the synthetic shapes dataset:
1. images/s of the detection training pipeline at 256 px WITHOUT augmentation,
2. the same WITH the default `AugmentConfig` (albumentations through tf.numpy_function),
   and their ratio,
3. the same with instance masks (the heaviest target),
4. images/s that training a small keras-cv YOLOv8 detector consumes (train steps on one
   batch held in memory, so only the model is timed),
and prints pipeline img/s / training img/s, which must be well above 1 for the input
pipeline never to starve training.

    .venv/bin/python benchmarks/pipeline_throughput.py            # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/pipeline_throughput.py --batches 10 --train-steps 3

tf.data AUTOTUNE is off inside the pipeline (see pipelines/dataset.py); timings start
after warm-up batches so start-up (thread pools, tracing) is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from detseg.core.contract import DETECTION, INSTANCE  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.pipelines import AugmentConfig, build_dataset  # noqa: E402

WARMUP_BATCHES = 3


@dataclass(frozen=True)
class Rate:
    """Images per wall-clock second, and per CPU-second of this process (all its threads).

    On a shared machine the wall rate drops with other load; the CPU rate much less.
    """

    wall: float
    cpu: float


class Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, images: int) -> Rate:
        return Rate(images / (time.perf_counter() - self.wall), images / (time.process_time() - self.cpu))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "detseg_bench_synthetic",
                        help="synthetic dataset folder (made if missing)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=25, help="timed batches per pipeline variant")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--num-parallel-calls", type=int, default=2)
    return parser.parse_args(argv)


def pipeline_images_per_second(dataset, task: str, augment: AugmentConfig | None,
                               args: argparse.Namespace) -> Rate:
    batches = build_dataset(dataset, task, args.image_size, args.batch_size, augment=augment, shuffle=True,
                            seed=0, max_objects=20, repeat=True, num_parallel_calls=args.num_parallel_calls)
    iterator = iter(batches)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    clock = Clock()
    for _ in range(args.batches):
        x, _ = next(iterator)
    return clock.rate(args.batches * int(x.shape[0]))


def small_yolo(num_classes: int):
    import keras_cv

    backbone = keras_cv.models.YOLOV8Backbone(stackwise_channels=[32, 64, 128, 256], stackwise_depth=[1, 2, 2, 1],
                                              include_rescaling=True, activation="swish")
    model = keras_cv.models.YOLOV8Detector(num_classes=num_classes, bounding_box_format="xyxy",
                                           backbone=backbone, fpn_depth=1)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), classification_loss="binary_crossentropy",
                  box_loss="ciou")
    return model


def training_images_per_second(dataset, args: argparse.Namespace) -> Rate:
    import keras

    batches = build_dataset(dataset, DETECTION, args.image_size, args.batch_size, augment=None,
                            max_objects=20, drop_remainder=True)
    x, y = next(iter(batches))
    # One batch held in memory and repeated: only the model's consumption is timed.
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat().with_options(batches.options())
    model = small_yolo(dataset.label_map.num_classes)
    model.fit(in_memory, steps_per_epoch=2, epochs=1, verbose=0)  # build, trace and warm up
    clock = Clock()
    model.fit(in_memory, steps_per_epoch=args.train_steps, epochs=1, verbose=0)
    rate = clock.rate(args.train_steps * int(x.shape[0]))
    keras.backend.clear_session()
    return rate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = ensure_synthetic(args.data, num_images=args.num_images, image_size=args.image_size, seed=0)
    dataset = load_coco(paths["train"])
    print(f"synthetic train split: {len(dataset.images)} images of {args.image_size} px, "
          f"batch {args.batch_size}, {args.batches} timed batches, num_parallel_calls={args.num_parallel_calls}, "
          f"{os.cpu_count()} CPUs")
    plain = pipeline_images_per_second(dataset, DETECTION, None, args)
    augmented = pipeline_images_per_second(dataset, DETECTION, AugmentConfig(), args)
    instance = pipeline_images_per_second(dataset, INSTANCE, AugmentConfig(), args)
    training = training_images_per_second(dataset, args)
    rows = [("pipeline, detection, no augmentation", plain),
            ("pipeline, detection, augmentation", augmented),
            ("pipeline, instance (masks), augmentation", instance),
            ("training, keras-cv YOLOv8 small (consumes)", training)]
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'img/s':>8}  {'img/CPU-s':>9}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate.wall:8.1f}  {rate.cpu:9.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"augmentation cost: augmented / plain = {augmented.wall / plain.wall:.2f} "
          f"(CPU: {augmented.cpu / plain.cpu:.2f})")
    print(f"headroom: augmented pipeline / training = {augmented.wall / training.wall:.1f}x "
          f"(CPU: {augmented.cpu / training.cpu:.1f}x; instance: {instance.wall / training.wall:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
