"""`detseg demo`: the main job on the embedded synthetic dataset, step by step.

Synthesize -> validate -> describe -> augmented batches drawn to PNG. Every step prints
what it did and where its files are; the output folder is reused between runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_IMAGES = 200
DEMO_IMAGE_SIZE = 256
DEMO_SEED = 0
PREVIEW_BATCH = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the synthetic dataset")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything the demo writes")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    splits = _step("1. synthetic dataset", _synthesize, out, args.seed)
    if not _step("2. validate", _validate, splits):
        return 1
    _step("3. statistics", _describe, splits)
    _step("4. augmented batches", _preview_batches, splits, out, args.seed)
    print(f"\ndemo finished: everything is in {out}/")
    return 0


def _step(title: str, function, *args):
    print(f"\n== {title} ==", flush=True)
    started = time.perf_counter()
    result = function(*args)
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return result


def _synthesize(out: Path, seed: int) -> dict[str, Path]:
    from data.synthetic import ensure_synthetic

    splits = ensure_synthetic(out / "synthetic", num_images=DEMO_IMAGES, image_size=DEMO_IMAGE_SIZE, seed=seed)
    for name, path in splits.items():
        print(f"   {name}: {path}")
    return splits


def _validate(splits: dict[str, Path]) -> bool:
    from data.validate import validate_coco

    ok = True
    for name, path in splits.items():
        report = validate_coco(path)
        print(f"   {name}: {report.format()}")
        ok = ok and report.ok
    return ok


def _describe(splits: dict[str, Path]) -> None:
    from data.coco import load_coco
    from data.stats import dataset_statistics, format_statistics

    print(format_statistics(dataset_statistics(load_coco(splits["train"]))))


def _preview_batches(splits: dict[str, Path], out: Path, seed: int) -> None:
    import numpy as np

    from data.coco import load_coco
    from data.draw import draw_annotations, image_grid, save_png
    from pipelines import INSTANCE, PAD_CLASS, AugmentConfig, build_dataset

    dataset = load_coco(splits["train"])
    names = dataset.label_map.names
    batches = build_dataset(dataset, INSTANCE, DEMO_IMAGE_SIZE, PREVIEW_BATCH, augment=AugmentConfig(),
                            shuffle=True, seed=seed, max_objects=16)
    x, y = next(iter(batches))
    drawn = []
    for image, boxes, classes, masks in zip(x.numpy(), y["boxes"].numpy(), y["classes"].numpy(),
                                            y["masks"].numpy()):
        keep = classes != PAD_CLASS
        drawn.append(draw_annotations(image.astype(np.uint8), boxes[keep], [names[c] for c in classes[keep]],
                                      masks=masks[keep], class_ids=classes[keep]))
    path = save_png(image_grid(drawn, columns=4), out / "augmented_batch.png")
    print(f"   {len(drawn)} augmented images with their boxes and masks -> {path}")
