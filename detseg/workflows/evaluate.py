"""Evaluate workflow: a report from a results file, a run directory, a SavedModel or a server.

    evaluation = evaluate_model("runs/shapes", "data/shapes/test.json", "report/")
    evaluation = evaluate_model("exports/shapes", "data/shapes/test.json", "report/")   # SavedModel
    evaluation = evaluate_model(None, "test.json", "report/", server="http://127.0.0.1:8501",
                                model_name="shapes")
    evaluation = evaluate_results_file("test.json", "coco_results.json", "report/")
    evaluation.report["coco"]["bbox"]["stats"]["AP"], evaluation.files["html"]

A run directory's final model runs in memory through the eval pipeline
(`training.predictions`); a SavedModel (a version folder, or a base path: its latest
version) and a served model run their `serving_default` signature on the encoded image
files (`serving.image_predictions`), so the exported graph, and the server, are what get
evaluated. Model evaluations write `out/coco_results.json` (original COCO image and
category ids, RLE masks with string counts) beside the report (`report.json`, `.md`,
`.html`, `plots/`, `examples/`). Detection / instance models get pycocotools' COCO bbox
(+ segm) numbers; semantic and cls+loc models their own report
(`evaluation.task_evaluation`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from detseg.core.contract import CLASSIFICATION_LOCALIZATION, INSTANCE, SEMANTIC
from detseg.data.coco import CocoDataset, load_coco
from detseg.data.errors import DatasetError
from detseg.evaluation.coco_eval import load_ground_truth
from detseg.evaluation.coco_results import write_coco_results
from detseg.evaluation.detection_report import build_detection_report
from detseg.evaluation.example_images import render_examples
from detseg.evaluation.report import write_report
from detseg.evaluation.task_evaluation import evaluate_task_predictions
from detseg.serving.image_predictions import (SavedModelImages, ServedModelImages, image_predictions,
                                              saved_model_version_dir, task_of_outputs)
from detseg.training.predictions import eval_targets, model_predictions
from detseg.training.run_model import RUN_FILES, load_run_model

RESULTS_FILENAME = "coco_results.json"
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONFUSION_IOU = 0.5
DEFAULT_CONFUSION_SCORE = 0.5
DEFAULT_EXAMPLES = 4

Log = Callable[[str], None]


class EvaluateArgumentsError(ValueError):
    """No source of predictions, two sources, or a path that is no model."""


@dataclass
class ModelSource:
    """Where a model's predictions come from: its task, the per-image predictions, the truths."""

    task: str
    predictions: Iterable
    truths: Mapping | None
    description: str


@dataclass
class Evaluation:
    """What an evaluation wrote: the report (as in `report.json`) and the files, by name
    ("json", "markdown", "html", plots; "results" for a model's COCO results)."""

    report: dict[str, Any]
    files: dict[str, Path]
    task: str | None = None
    num_results: int = 0
    description: str = ""
    examples: list[Path] = field(default_factory=list)


def evaluate_results_file(annotations: str | os.PathLike, predictions: str | os.PathLike,
                          out: str | os.PathLike, *, images: str | os.PathLike | None = None,
                          iou_types: Sequence[str] = ("bbox",), description: str | None = None,
                          confusion_iou: float = DEFAULT_CONFUSION_IOU,
                          confusion_score: float = DEFAULT_CONFUSION_SCORE, examples: int = DEFAULT_EXAMPLES,
                          log: Log | None = None) -> Evaluation:
    """Score a COCO results JSON (`[{image_id, category_id, score, bbox | segmentation}]`)."""
    report = build_detection_report(annotations, predictions, tuple(iou_types), model=description,
                                    confusion_iou_threshold=confusion_iou,
                                    confusion_score_threshold=confusion_score)
    pictures = _examples(annotations, images, predictions, out, examples, confusion_score,
                         "segm" in report["coco"], log)
    files = write_report(out, report, pictures)
    return Evaluation(report, files, description=description or str(predictions), examples=pictures)


def evaluate_model(model: str | os.PathLike | None, annotations: str | os.PathLike, out: str | os.PathLike, *,
                   images: str | os.PathLike | None = None, server: str | None = None,
                   model_name: str | None = None, version: int | None = None,
                   iou_types: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   description: str | None = None, confusion_iou: float = DEFAULT_CONFUSION_IOU,
                   confusion_score: float = DEFAULT_CONFUSION_SCORE, examples: int = DEFAULT_EXAMPLES,
                   log: Log | None = None) -> Evaluation:
    """Run a model on `annotations`' images and score it; writes the results and the report.

    The model is `model` (a run directory, or a SavedModel version folder or base path),
    or `server` (`http://host:8501` REST, `grpc://host:8500`) with `model_name`.
    `iou_types`: default the task's (bbox, + segm for instance models).
    """
    if (model is None) == (server is None):
        raise EvaluateArgumentsError("give exactly one model source: a run directory or SavedModel path, "
                                     "or a server address with a model name")
    if batch_size < 1:
        raise EvaluateArgumentsError(f"batch size must be positive, got {batch_size}")
    gt = load_ground_truth(load_coco(annotations, images))
    source = open_model_source(model, gt.dataset, server=server, model_name=model_name, version=version,
                               batch_size=batch_size, annotations=annotations)
    _say(log, f"evaluating {source.description} ({source.task}) on {len(gt.dataset.images)} images of "
              f"{annotations}")
    results, report = evaluate_task_predictions(
        gt, source.task, source.predictions, source.truths, model=description or source.description,
        iou_types=iou_types, confusion_iou_threshold=confusion_iou, confusion_score_threshold=confusion_score)
    Path(out).mkdir(parents=True, exist_ok=True)
    written = write_coco_results(results, Path(out) / RESULTS_FILENAME)
    with_masks = source.task == SEMANTIC or (source.task == INSTANCE and "segm" in report.get("coco", {}))
    pictures = _examples(annotations, images, results, out, examples, confusion_score, with_masks, log)
    files = {**write_report(out, report, pictures), "results": written}
    return Evaluation(report, files, source.task, len(results), source.description, pictures)


def open_model_source(model: str | os.PathLike | None, dataset: CocoDataset, *, server: str | None = None,
                      model_name: str | None = None, version: int | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE,
                      annotations: str | os.PathLike | None = None) -> ModelSource:
    """A run directory, a SavedModel or a served model, ready to predict on `dataset`'s images."""
    if server is not None:
        return exported_source(ServedModelImages(server, model_name, version), dataset, batch_size)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "config.yaml").is_file() or (path / "model.keras").is_file():
        return run_directory_source(path, dataset, batch_size, annotations)
    try:
        saved_model_version_dir(path)
    except ValueError:
        raise EvaluateArgumentsError(
            f"{path}: neither a run directory ({', '.join(RUN_FILES)}) nor a SavedModel "
            f"(saved_model.pb, or numbered version folders holding one)") from None
    return exported_source(SavedModelImages(path), dataset, batch_size)


def run_directory_source(path: Path, dataset: CocoDataset, batch_size: int = DEFAULT_BATCH_SIZE,
                         annotations: str | os.PathLike | None = None) -> ModelSource:
    """A run directory's final model, in memory through the eval pipeline."""
    run = load_run_model(path)
    if (run.label_map.coco_ids, run.label_map.names) != (dataset.label_map.coco_ids, dataset.label_map.names):
        raise DatasetError(f"{path / 'label_map.json'}: the model's classes {list(run.label_map.names)} "
                           f"(COCO ids {list(run.label_map.coco_ids)}) are not those of "
                           f"{annotations or 'the dataset'} {list(dataset.label_map.names)} "
                           f"(ids {list(dataset.label_map.coco_ids)})")
    predictions = model_predictions(run.model, dataset, run.task, run.image_size, batch_size)
    return ModelSource(run.task, predictions, eval_targets(dataset, run.task), f"run directory {path}")


def exported_source(predict: SavedModelImages | ServedModelImages, dataset: CocoDataset,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> ModelSource:
    """An exported model's `serving_default` on the dataset's encoded image files."""
    task = task_of_outputs(predict.output_names)
    truths = eval_targets(dataset, task)
    # cls+loc scores images with an object only, as its pipeline does (truths lists them).
    images = [(image.id, dataset.image_path(image)) for image in dataset.images
              if task != CLASSIFICATION_LOCALIZATION or image.id in truths]
    return ModelSource(task, image_predictions(predict, images, batch_size), truths, predict.description)


def _examples(annotations, images, results, out, count: int, score_threshold: float, with_masks: bool,
              log: Log | None) -> list[Path]:
    """Example pictures; without `images` and no image files where guessed, a note instead."""
    if count <= 0:
        return []
    dataset = load_coco(annotations, images)
    if images is None and not (dataset.images and dataset.image_path(dataset.images[0]).is_file()):
        _say(log, f"note: no example pictures: no image files in {dataset.image_dir} (pass the image folder)")
        return []
    return render_examples(dataset, results, out, count, score_threshold, with_masks=with_masks)


def _say(log: Log | None, message: str) -> None:
    if log is not None:
        log(message)
