"""The demo workflow: the main job on the embedded synthetic dataset, step by step.

Synthesize -> validate -> describe -> augmented batches drawn to PNG -> a brief
classification + localization run -> YOLO on an ImageNet-pretrained EfficientNet-Lite0
(stage 1 on cached bottleneck features, stage 2 fine-tuning the top blocks) -> COCO
evaluation report -> SavedModel export -> the embedded TF-Serving-compatible server on
127.0.0.1 -> predictions over its REST API, drawn. Every step prints what it did and
where its files are. The dataset and finished training runs are reused on a second run.

The ImageNet weights come offline from the `detseg[weights]` pip package (converted once
into the detseg cache folder); without it the first training step says what to install.

    run_demo(Path("demo_out"), seed=0)    # `detseg demo --out demo_out`
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

DEMO_IMAGES = 400
DEMO_IMAGE_SIZE = 256
PREVIEW_BATCH = 8
DEMO_CONFIG = "demo_yolo"  # packaged configs (detseg/configs/), found by name
CLSLOC_CONFIG = "demo_clsloc"
CLSLOC_METRICS = ("accuracy", "mean_iou", "localization_accuracy")
MODEL_NAME = "shapes"
SHAPES_DIR = "data/shapes"  # the demo's dataset: DIR/data/ holds the images the demo used
SINGLE_SHAPES_DIR = "data/single_shapes"  # one object per image, for classification + localization
PREDICTED_IMAGES = 4
PREDICTION_MIN_SCORE = 0.3

Print = Callable[[str], None]


def _print_now(message: str) -> None:
    print(message, flush=True)


def run_demo(out: Path, seed: int = 0, echo: Print = _print_now) -> int:
    """Runs every step into `out`; returns the exit code (1 when the data does not validate)."""
    out.mkdir(parents=True, exist_ok=True)
    demo = _Demo(out, seed, echo)
    splits = demo.step("1. synthetic dataset", demo.synthesize)
    if not demo.step("2. validate", demo.validate, splits):
        return 1
    demo.step("3. statistics", demo.describe, splits)
    demo.step("4. augmented batches", demo.preview_batches, splits)
    demo.step("5. classification + localization, briefly (single-object images, ImageNet backbone)",
              demo.train_clsloc)
    run_dir = demo.step("6. train YOLO on ImageNet EfficientNet-Lite0 "
                        "(stage 1: cached bottleneck features, stage 2: fine-tuning)", demo.train_yolo)
    demo.step("7. COCO evaluation report", demo.evaluate, run_dir, splits)
    version = demo.step("8. export a SavedModel for TF Serving", demo.export, run_dir)
    demo.step("9. serve it and predict over the REST API", demo.serve_and_predict, version.parent, splits)
    echo(f"\ndemo finished: everything is in {out}/ (open {out}/report/report.html)")
    return 0


class _Demo:
    def __init__(self, out: Path, seed: int, echo: Print):
        self.out, self.seed, self.echo = out, seed, echo

    def step(self, title: str, function, *args):
        self.echo(f"\n== {title} ==")
        started = time.perf_counter()
        result = function(*args)
        self.echo(f"   ({time.perf_counter() - started:.1f} s)")
        return result

    def indented(self, message: str) -> None:
        self.echo(f"   {message}")

    def synthesize(self) -> dict[str, Path]:
        from detseg.data.synthetic import ensure_synthetic

        splits = ensure_synthetic(self.out / SHAPES_DIR, num_images=DEMO_IMAGES, image_size=DEMO_IMAGE_SIZE,
                                  seed=self.seed)
        for name, path in splits.items():
            self.indented(f"{name}: {path}")
        return splits

    def validate(self, splits: dict[str, Path]) -> bool:
        from detseg.data.validate import validate_coco

        ok = True
        for name, path in splits.items():
            report = validate_coco(path)
            self.indented(f"{name}: {report.format()}")
            ok = ok and report.ok
        return ok

    def describe(self, splits: dict[str, Path]) -> None:
        from detseg.data.coco import load_coco
        from detseg.data.stats import dataset_statistics, format_statistics

        self.echo(format_statistics(dataset_statistics(load_coco(splits["train"]))))

    def preview_batches(self, splits: dict[str, Path]) -> None:
        import numpy as np

        from detseg.data.coco import load_coco
        from detseg.data.draw import draw_annotations, image_grid, save_png
        from detseg.pipelines import INSTANCE, PAD_CLASS, AugmentConfig, build_dataset

        dataset = load_coco(splits["train"])
        names = dataset.label_map.names
        batches = build_dataset(dataset, INSTANCE, DEMO_IMAGE_SIZE, PREVIEW_BATCH, augment=AugmentConfig(),
                                shuffle=True, seed=self.seed, max_objects=16)
        x, y = next(iter(batches))
        drawn = []
        for image, boxes, classes, masks in zip(x.numpy(), y["boxes"].numpy(), y["classes"].numpy(),
                                                y["masks"].numpy()):
            keep = classes != PAD_CLASS
            drawn.append(draw_annotations(image.astype(np.uint8), boxes[keep], [names[c] for c in classes[keep]],
                                          masks=masks[keep], class_ids=classes[keep]))
        path = save_png(image_grid(drawn, columns=4), self.out / "augmented_batch.png")
        self.indented(f"{len(drawn)} augmented images with their boxes and masks -> {path}")

    def train_clsloc(self) -> None:
        """One object per image, as classification + localization assumes (its own small set)."""
        from detseg.workflows.train import train_model

        overrides = [f"runs_dir={self.out / 'runs'}", f"data.synthetic.dir={self.out / SINGLE_SHAPES_DIR}",
                     f"data.synthetic.seed={self.seed}", f"seed={self.seed}"]
        result = train_model(CLSLOC_CONFIG, overrides, log=self.indented)
        metrics = ", ".join(f"{name} {result.metrics[name]:.3f}" for name in CLSLOC_METRICS)
        self.indented(f"on {result.metrics['num_samples']} val images: {metrics}; run: {result.run_dir}")

    def train_yolo(self) -> Path:
        from detseg.workflows.train import train_model

        # The same generator parameters as step 1, so the trainer reuses the demo's dataset.
        overrides = [f"runs_dir={self.out / 'runs'}", f"data.synthetic.dir={self.out / SHAPES_DIR}",
                     f"data.synthetic.num_images={DEMO_IMAGES}", f"data.synthetic.image_size={DEMO_IMAGE_SIZE}",
                     f"data.synthetic.seed={self.seed}", f"seed={self.seed}"]
        result = train_model(DEMO_CONFIG, overrides, log=self.indented)
        self.indented(f"{result.headline_metric} on val: {result.metrics[result.headline_metric]:.3f}; "
                      f"run: {result.run_dir}")
        return result.run_dir

    def evaluate(self, run_dir: Path, splits: dict[str, Path]) -> None:
        from detseg.evaluation.report_document import format_stats_table
        from detseg.workflows.evaluate import evaluate_model

        evaluation = evaluate_model(run_dir, splits["test"], self.out / "report", log=self.indented)
        for section in evaluation.report.get("coco", {}).values():
            self.echo(format_stats_table(section))
        self.indented(f"report: {evaluation.files['html']}; results: {evaluation.files['results']} "
                      f"({evaluation.num_results} detections)")

    def export(self, run_dir: Path) -> Path:
        from detseg.workflows.export import export_run

        version = export_run(run_dir, self.out / "models" / MODEL_NAME, MODEL_NAME)
        self.indented(f"{version} (and {self.out / 'models' / 'models.config'})")
        return version

    def serve_and_predict(self, model_base_path: Path, splits: dict[str, Path]) -> None:
        from detseg.data.coco import load_coco
        from detseg.workflows.predict import predict_images
        from detseg.workflows.serve import start_server

        test = load_coco(splits["test"])
        images = [test.image_path(record) for record in test.images[:PREDICTED_IMAGES]]
        server = start_server(model_base_path, MODEL_NAME, rest_api_port=0, grpc_port=None, max_lifetime_s=600)
        try:
            self.indented(f"serving {MODEL_NAME} at {server.rest_url}/v1/models/{MODEL_NAME} "
                          f"(TF Serving's REST API)")
            predict_images(images, server=server.rest_url, model_name=MODEL_NAME, out=self.out / "predictions",
                           min_score=PREDICTION_MIN_SCORE, log=self.indented)
        finally:
            server.stop()
