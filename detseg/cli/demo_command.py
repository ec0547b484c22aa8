"""`detseg demo`: the main job on the embedded synthetic dataset, step by step.

Synthesize -> validate -> describe -> augmented batches drawn to PNG -> a brief
classification + localization run (its metrics printed) -> train a small YOLO (backbone
pretrained on object crops, frozen-backbone stage, then fine-tuning) -> COCO evaluation
report -> SavedModel export -> the embedded TF-Serving-compatible server on 127.0.0.1 ->
predictions over its REST API, drawn. Every step prints what it did and where its files
are. The dataset and the finished training runs are reused when the demo runs again.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from detseg.cli.arguments import int_at_least, output_folder

DEMO_IMAGES = 400
DEMO_IMAGE_SIZE = 256
DEMO_SEED = 0
PREVIEW_BATCH = 8
DEMO_CONFIG = "demo_yolo"  # packaged configs (detseg/configs/), found by name
CLSLOC_CONFIG = "demo_clsloc"
CLSLOC_METRICS = ("accuracy", "mean_iou", "localization_accuracy")
PRETRAIN_BACKBONE = "tiny"  # the backbone of both demo configs
PRETRAIN_IMAGE_SIZE = 64
PRETRAIN_EPOCHS = 10
MODEL_NAME = "shapes"
SHAPES_DIR = "data/shapes"  # the demo's dataset: DIR/data/ holds the images the demo used
SINGLE_SHAPES_DIR = "data/single_shapes"  # one object per image, for classification + localization
PREDICTED_IMAGES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the synthetic dataset",
                              description="Synthesize, validate, augment, train (cls+loc and YOLO), "
                                          "evaluate, export, serve and predict, step by step; a rerun "
                                          "reuses the dataset and the finished runs.")
    p.add_argument("--out", type=output_folder, default=Path("demo_out"), help="folder for everything the demo writes")
    p.add_argument("--seed", type=int_at_least(0), default=DEMO_SEED,
                   help="seed of the dataset, augmentation and training")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    splits = _step("1. synthetic dataset", _synthesize, out, args.seed)
    if not _step("2. validate", _validate, splits):
        return 1
    _step("3. statistics", _describe, splits)
    _step("4. augmented batches", _preview_batches, splits, out, args.seed)
    weights = _step("5. pretrain the backbone on object crops (transfer learning, offline)", _pretrain,
                    splits, out, args.seed)
    _step("6. classification + localization, briefly (single-object images)", _train_clsloc,
          out, weights, args.seed)
    run_dir = _step("7. train YOLO (stage 1: frozen backbone, stage 2: fine-tuning)",
                    _train, out, weights, args.seed)
    _step("8. COCO evaluation report", _evaluate, run_dir, splits, out)
    version = _step("9. export a SavedModel for TF Serving", _export, run_dir, out)
    _step("10. serve it and predict over the REST API", _serve_and_predict, version.parent, splits, out)
    print(f"\ndemo finished: everything is in {out}/ (open {out}/report/report.html)")
    return 0


def _step(title: str, function, *args):
    print(f"\n== {title} ==", flush=True)
    started = time.perf_counter()
    result = function(*args)
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return result


def _synthesize(out: Path, seed: int) -> dict[str, Path]:
    from detseg.data.synthetic import ensure_synthetic

    splits = ensure_synthetic(out / SHAPES_DIR, num_images=DEMO_IMAGES, image_size=DEMO_IMAGE_SIZE, seed=seed)
    for name, path in splits.items():
        print(f"   {name}: {path}")
    return splits


def _validate(splits: dict[str, Path]) -> bool:
    from detseg.data.validate import validate_coco

    ok = True
    for name, path in splits.items():
        report = validate_coco(path)
        print(f"   {name}: {report.format()}")
        ok = ok and report.ok
    return ok


def _describe(splits: dict[str, Path]) -> None:
    from detseg.data.coco import load_coco
    from detseg.data.stats import dataset_statistics, format_statistics

    print(format_statistics(dataset_statistics(load_coco(splits["train"]))))


def _preview_batches(splits: dict[str, Path], out: Path, seed: int) -> None:
    import numpy as np

    from detseg.data.coco import load_coco
    from detseg.data.draw import draw_annotations, image_grid, save_png
    from detseg.pipelines import INSTANCE, PAD_CLASS, AugmentConfig, build_dataset

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


def _pretrain(splits: dict[str, Path], out: Path, seed: int) -> Path:
    """`detseg pretrain` on the train split's object crops; reused when the demo runs again."""
    from detseg.training.pretrain import pretrain_backbone

    folder = out / "backbone"
    weights = folder / f"{PRETRAIN_BACKBONE}.weights.h5"
    if weights.is_file():
        print(f"   reusing {weights}")
        return weights
    staging = out / ".backbone-staging"  # renamed when complete: a half-written file is never reused
    shutil.rmtree(staging, ignore_errors=True)
    result = pretrain_backbone(splits["train"], PRETRAIN_BACKBONE, PRETRAIN_IMAGE_SIZE, PRETRAIN_EPOCHS,
                               staging / weights.name, seed=seed,
                               log=_indented)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    print(f"   crop classifier accuracy: train {result.train_accuracy:.3f}, val {result.val_accuracy:.3f}"
          f" -> {weights}")
    return weights


def _train_overrides(out: Path, weights: Path, overrides: list[str]) -> list[str]:
    return [f"runs_dir={out / 'runs'}", f"model.weights={weights}", "pretrain.epochs=0", *overrides]


def _train_clsloc(out: Path, weights: Path, seed: int) -> None:
    """One object per image, as classification + localization assumes (its own small set)."""
    from detseg.workflows.train import train_model

    overrides = [f"data.synthetic.dir={out / SINGLE_SHAPES_DIR}", f"data.synthetic.seed={seed}"]
    result = train_model(CLSLOC_CONFIG, _train_overrides(out, weights, overrides), log=_indented)
    metrics = ", ".join(f"{name} {result.metrics[name]:.3f}" for name in CLSLOC_METRICS)
    print(f"   on {result.metrics['num_samples']} val images: {metrics}; run: {result.run_dir}")


def _train(out: Path, weights: Path, seed: int) -> Path:
    from detseg.workflows.train import train_model

    # The same generator parameters as step 1, so the trainer reuses the demo's dataset.
    overrides = [f"data.synthetic.dir={out / SHAPES_DIR}", f"data.synthetic.num_images={DEMO_IMAGES}",
                 f"data.synthetic.image_size={DEMO_IMAGE_SIZE}", f"data.synthetic.seed={seed}"]
    result = train_model(DEMO_CONFIG, _train_overrides(out, weights, overrides), log=_indented)
    print(f"   {result.headline_metric} on val: {result.metrics[result.headline_metric]:.3f}; run: {result.run_dir}")
    return result.run_dir


def _evaluate(run_dir: Path, splits: dict[str, Path], out: Path) -> None:
    from detseg.evaluation.report_document import format_stats_table
    from detseg.workflows.evaluate import evaluate_model

    evaluation = evaluate_model(run_dir, splits["test"], out / "report", log=_indented)
    for section in evaluation.report.get("coco", {}).values():
        print(format_stats_table(section))
    print(f"   report: {evaluation.files['html']}; results: {evaluation.files['results']} "
          f"({evaluation.num_results} detections)")


def _export(run_dir: Path, out: Path) -> Path:
    from detseg.workflows.export import export_run

    version = export_run(run_dir, out / "models" / MODEL_NAME, MODEL_NAME)
    print(f"   {version} (and {out / 'models' / 'models.config'})")
    return version


def _serve_and_predict(model_base_path: Path, splits: dict[str, Path], out: Path) -> None:
    from detseg.data.coco import load_coco
    from detseg.workflows.predict import predict_images
    from detseg.workflows.serve import start_server

    test = load_coco(splits["test"])
    images = [test.image_path(record) for record in test.images[:PREDICTED_IMAGES]]
    server = start_server(model_base_path, MODEL_NAME, rest_api_port=0, grpc_port=None, max_lifetime_s=600)
    try:
        print(f"   serving {MODEL_NAME} at {server.rest_url}/v1/models/{MODEL_NAME} (TF Serving's REST API)")
        predict_images(images, server=server.rest_url, model_name=MODEL_NAME, out=out / "predictions",
                       min_score=0.3, log=_indented)
    finally:
        server.stop()


def _indented(message: str) -> None:
    print(f"   {message}", flush=True)
