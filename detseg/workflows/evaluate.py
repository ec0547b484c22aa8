"""Evaluate workflow: a report from a results file, a run directory, a SavedModel or a server.

    evaluation = evaluate_model("runs/shapes", "data/shapes/test.json", "report/")
    evaluation = evaluate_model("exports/shapes", "data/shapes/test.json", "report/")   # SavedModel
    evaluation = evaluate_model(None, "test.json", "report/", server="http://127.0.0.1:8501",
                                model_name="shapes")
    evaluation = evaluate_results_file("test.json", "coco_results.json", "report/")
    evaluation = evaluate_model(None, "test.json", "report/", ensemble=["runs/a", "runs/b"])
    evaluation.report["coco"]["bbox"]["stats"]["AP"], evaluation.files["html"]

A run directory's final model runs in memory through the eval pipeline
(`training.predictions`), and so does an ensemble of run directories (one
`models.ensemble.EnsembleModel`, the model `detseg export --ensemble` exports); a SavedModel (a version folder, or a base path: its latest
version) and a served model run their `serving_default` signature on the encoded image
files (`serving.image_predictions`), so the exported graph, and the server, are what get
evaluated. Model evaluations write `out/coco_results.json` (original COCO image and
category ids, RLE masks with string counts) beside the report (`report.json`, `.md`,
`.html`, `plots/`, `examples/`). Detection / instance models get pycocotools' COCO bbox
(+ segm) numbers; semantic and cls+loc models their own report
(`evaluation.task_evaluation`).

A results file is scored for the IoU types its content is made for unless asked
(segmentations -> segm, boxes and segmentations -> both, boxes only -> bbox). segm
detections' areas are pycocotools' own unless `segm_area="mask"` (`evaluation.coco_eval`).
A semantic model's truth comes from the annotations unless `semantic_masks` names a
folder of semantic mask PNGs (`pipelines.records.with_semantic_masks`). Progress bars go
to stderr on a terminal or for `MANY_IMAGES` images and more (`progress=None`).
Arguments are checked before TensorFlow loads.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from detseg.core.contract import DETECTION, INSTANCE, SEMANTIC
from detseg.data.coco import load_coco
from detseg.evaluation.coco_eval import SEGM_AREA_PYCOCOTOOLS, SEGM_AREAS, load_ground_truth
from detseg.evaluation.coco_results import read_coco_results, write_coco_results
from detseg.evaluation.detection_report import build_detection_report
from detseg.evaluation.example_images import render_examples
from detseg.evaluation.report import write_report
from detseg.evaluation.task_evaluation import evaluate_task_predictions

RESULTS_FILENAME = "coco_results.json"
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONFUSION_IOU = 0.5
DEFAULT_CONFUSION_SCORE = 0.5
DEFAULT_EXAMPLES = 4
MANY_IMAGES = 200  # from this many images on, progress shows even when stderr is not a terminal
SERVER_SCHEMES = ("http://", "https://", "grpc://")

Log = Callable[[str], None]


class EvaluateArgumentsError(ValueError):
    """No source of predictions, two sources, or a bad batch size, server or folder."""


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
                          iou_types: Sequence[str] | None = None, segm_area: str = SEGM_AREA_PYCOCOTOOLS,
                          description: str | None = None, confusion_iou: float = DEFAULT_CONFUSION_IOU,
                          confusion_score: float = DEFAULT_CONFUSION_SCORE, examples: int = DEFAULT_EXAMPLES,
                          progress: bool | None = None, log: Log | None = None) -> Evaluation:
    """Score a COCO results JSON (`[{image_id, category_id, score, bbox | segmentation}]`).

    `iou_types`: default from the results' content (module docstring). An empty results
    list scores zeros and says so through `log`.
    """
    _check_segm_area(segm_area)
    gt = load_ground_truth(annotations)
    checked = read_coco_results(predictions, gt.dataset)
    if not checked.records:
        _say(log, f"note: {predictions} holds no detections: every measurable stat is 0")
    report = build_detection_report(gt, checked, iou_types, model=description,
                                    confusion_iou_threshold=confusion_iou,
                                    confusion_score_threshold=confusion_score,
                                    progress=_progress(progress, len(gt.dataset.images)), segm_area=segm_area)
    pictures = _examples(annotations, images, checked, out, examples, confusion_score,
                         "segm" in report["coco"], log)
    files = write_report(out, report, pictures)
    return Evaluation(report, files, description=description or str(predictions), examples=pictures)


def evaluate_model(model: str | os.PathLike | None, annotations: str | os.PathLike, out: str | os.PathLike, *,
                   images: str | os.PathLike | None = None, server: str | None = None,
                   model_name: str | None = None, version: int | None = None,
                   iou_types: Sequence[str] | None = None, segm_area: str = SEGM_AREA_PYCOCOTOOLS,
                   semantic_masks: str | os.PathLike | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   description: str | None = None, confusion_iou: float = DEFAULT_CONFUSION_IOU,
                   confusion_score: float = DEFAULT_CONFUSION_SCORE, examples: int = DEFAULT_EXAMPLES,
                   progress: bool | None = None, log: Log | None = None,
                   ensemble: Sequence[str | os.PathLike] | None = None) -> Evaluation:
    """Run a model on `annotations`' images and score it; writes the results and the report.

    The model is `model` (a run directory, or a SavedModel version folder or base path),
    or `server` (`http://host:8501` REST, `grpc://host:8500`) with `model_name`, or
    `ensemble` (run directories of one family, image size and class list: their merged
    predictions, `detseg.workflows.model_sources.load_ensemble_runs`).
    `iou_types`: default the task's (bbox, + segm for instance models). `semantic_masks`:
    a folder of semantic mask PNGs, the truth of a semantic model (default: the annotations).
    """
    check_model_arguments(model, server=server, model_name=model_name, version=version,
                          batch_size=batch_size, semantic_masks=semantic_masks, images=images, ensemble=ensemble)
    _check_segm_area(segm_area)
    dataset = load_coco(annotations, images)
    # TensorFlow loads here, once the arguments and the annotations are known to be good: a
    # results file is scored without it (fast, and its errors stay one line on stderr).
    from detseg.pipelines.records import with_semantic_masks
    from detseg.workflows.model_sources import open_model_source

    gt = load_ground_truth(with_semantic_masks(dataset, semantic_masks))
    source = open_model_source(model, gt.dataset, server=server, model_name=model_name, version=version,
                               batch_size=batch_size, annotations=annotations, ensemble=ensemble)
    if semantic_masks is not None and source.task != SEMANTIC:
        raise EvaluateArgumentsError(f"semantic masks {semantic_masks} are the truth of a semantic "
                                     f"segmentation model, but {source.description} is a {source.task} model")
    _say(log, f"evaluating {source.description} ({source.task}) on {len(gt.dataset.images)} images of "
              f"{annotations}")
    results, report = evaluate_task_predictions(
        gt, source.task, source.predictions, source.truths, model=description or source.description,
        iou_types=iou_types, confusion_iou_threshold=confusion_iou, confusion_score_threshold=confusion_score,
        progress=_progress(progress, len(gt.dataset.images)), segm_area=segm_area)
    if report["source"].get("zero_size_boxes_left_out"):
        _say(log, f"note: {report['source']['zero_size_boxes_left_out']} predicted boxes of zero width or "
                  f"height left out of the results (they cannot match any object)")
    if not results and source.task in (DETECTION, INSTANCE):
        _say(log, f"note: {source.description} made no detections: every measurable stat is 0")
    Path(out).mkdir(parents=True, exist_ok=True)
    written = write_coco_results(results, Path(out) / RESULTS_FILENAME)
    with_masks = source.task == SEMANTIC or (source.task == INSTANCE and "segm" in report.get("coco", {}))
    pictures = _examples(annotations, images, results, out, examples, confusion_score, with_masks, log)
    files = {**write_report(out, report, pictures), "results": written}
    return Evaluation(report, files, source.task, len(results), source.description, pictures)


def check_model_arguments(model: str | os.PathLike | None, *, server: str | None, model_name: str | None,
                          version: int | None, batch_size: int, semantic_masks: str | os.PathLike | None = None,
                          images: str | os.PathLike | None = None,
                          ensemble: Sequence[str | os.PathLike] | None = None) -> None:
    """Raise `EvaluateArgumentsError` for arguments `evaluate_model` cannot use (no TensorFlow)."""
    if [model is not None, server is not None, ensemble is not None].count(True) != 1:
        raise EvaluateArgumentsError("give exactly one model source: a run directory or SavedModel path, "
                                     "a server address with a model name, or an ensemble of run directories")
    if ensemble is not None and not list(ensemble):
        raise EvaluateArgumentsError("an ensemble needs at least one run directory")
    if batch_size < 1:
        raise EvaluateArgumentsError(f"batch size must be positive, got {batch_size}")
    if server is not None:
        problem = server_address_problem(server)
        if problem:
            raise EvaluateArgumentsError(f"server address {server!r}: {problem}")
        if not model_name:
            raise EvaluateArgumentsError("a served model needs its name (model_name)")
    elif model_name:
        raise EvaluateArgumentsError("a model name goes with a server address")
    if version is not None and (server is None or version < 1):
        raise EvaluateArgumentsError(f"a model version ({version}) goes with a server address and is >= 1")
    for what, folder in (("semantic mask folder", semantic_masks), ("image folder", images)):
        if folder is not None and not Path(folder).is_dir():
            raise EvaluateArgumentsError(f"{what} {folder}: no such folder")


def server_address_problem(address: str) -> str | None:
    """What is wrong with a TF Serving address (`http(s)://host:port`, `grpc://host:port`,
    `host:port`), or None."""
    rest = address
    if "://" in address:
        if not address.startswith(SERVER_SCHEMES):
            return "expected http://host:port (REST) or grpc://host:port (gRPC)"
        rest = address.split("://", 1)[1].split("/", 1)[0]
        if address.startswith(("http://", "https://")):
            return None if rest else "no host after the scheme"
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return "expected http://host:port (REST), grpc://host:port or host:port (gRPC)"
    return None


def show_progress(num_images: int) -> bool:
    """Progress bars on stderr: on a terminal, or for `MANY_IMAGES` images and more."""
    return sys.stderr.isatty() or num_images >= MANY_IMAGES


def _progress(progress: bool | None, num_images: int) -> bool:
    return show_progress(num_images) if progress is None else progress


def _check_segm_area(segm_area: str) -> None:
    if segm_area not in SEGM_AREAS:
        raise EvaluateArgumentsError(f"segm area must be one of {list(SEGM_AREAS)}, got {segm_area!r}")


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
