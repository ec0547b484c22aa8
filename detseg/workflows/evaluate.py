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
from typing import Any, Callable, Sequence

from detseg.core.contract import INSTANCE, SEMANTIC
from detseg.data.coco import CocoDataset, load_coco
from detseg.evaluation.coco_eval import load_ground_truth
from detseg.evaluation.coco_results import write_coco_results
from detseg.evaluation.detection_report import build_detection_report
from detseg.evaluation.example_images import render_examples
from detseg.evaluation.report import write_report
from detseg.evaluation.task_evaluation import evaluate_task_predictions

RESULTS_FILENAME = "coco_results.json"
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONFUSION_IOU = 0.5
DEFAULT_CONFUSION_SCORE = 0.5
DEFAULT_EXAMPLES = 4

Log = Callable[[str], None]


class EvaluateArgumentsError(ValueError):
    """No source of predictions, two sources, or a bad batch size."""


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
    # TensorFlow loads here, when a model is evaluated: a results file is scored without it
    # (fast, and its errors stay one line on stderr).
    from detseg.workflows.model_sources import open_model_source

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
