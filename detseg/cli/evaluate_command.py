"""`detseg evaluate`: the evaluation report of a results file, a trained model or a served one.

    detseg evaluate --annotations GT.json --predictions RESULTS.json --out DIR
    detseg evaluate runs/shapes --annotations GT.json [--images DIR] --out DIR     # run directory
    detseg evaluate exports/shapes[/3] --annotations GT.json --out DIR            # SavedModel
    detseg evaluate --server http://127.0.0.1:8501 --model-name shapes --annotations GT.json --out DIR

A run directory's final model runs in memory through the eval pipeline
(`training.predictions`); a SavedModel (a version folder, or a base path: its latest
version) and a served model run their `serving_default` signature on the encoded image
files (`serving.image_predictions`), so the exported graph, and the server, are what get
evaluated. The model modes write `DIR/coco_results.json` (original COCO image and
category ids, RLE masks with string counts) beside the report. Detection / instance
models get pycocotools' COCO bbox (+ segm) numbers; semantic and cls+loc models their
own report (`evaluation.task_evaluation`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

IOU_TYPE_CHOICES = {"bbox": ("bbox",), "segm": ("segm",), "both": ("bbox", "segm")}
RESULTS_FILENAME = "coco_results.json"


class EvaluateArgumentsError(ValueError):
    """The command line asks for no source, or for two sources, of predictions."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluation report (JSON, Markdown, HTML, plots) of a results file or a model",
        description="Evaluate COCO results, a run directory's model, an exported SavedModel or a served "
                    "model against COCO ground truth (pycocotools for detection) and write "
                    "DIR/report.json, DIR/report.md, DIR/report.html and DIR/plots/*.png.")
    p.add_argument("model_path", nargs="?", type=Path, default=None, metavar="MODEL",
                   help="a run directory (runs/<name>), a SavedModel version folder, or a base path "
                        "holding numbered versions (the latest is evaluated)")
    p.add_argument("--annotations", type=Path, required=True, help="ground truth: COCO instances JSON")
    p.add_argument("--predictions", type=Path, default=None,
                   help="COCO results JSON: [{image_id, category_id, score, bbox and/or segmentation}]")
    p.add_argument("--server", default=None,
                   help="evaluate a served model: http://host:8501 (REST) or grpc://host:8500")
    p.add_argument("--model-name", dest="model_name", default=None, help="model name on the server")
    p.add_argument("--version", type=int, default=None, help="model version on the server (default: latest)")
    p.add_argument("--out", type=Path, required=True, help="folder for the report")
    p.add_argument("--images", type=Path, default=None,
                   help="image folder of --annotations (default: guessed from its location)")
    p.add_argument("--iou-type", choices=sorted(IOU_TYPE_CHOICES), default=None,
                   help="box or mask IoU, or both (default: bbox for a results file; the model's task)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    p.add_argument("--confusion-iou", type=float, default=0.5,
                   help="IoU at which a detection matches an object in the confusion matrix (default 0.5)")
    p.add_argument("--confusion-score", type=float, default=0.5,
                   help="lowest score of a detection counted in the confusion matrix (default 0.5)")
    p.add_argument("--model", default=None, metavar="DESCRIPTION",
                   help="what made the predictions, recorded in the report (default: MODEL or the server)")
    p.add_argument("--examples", type=int, default=4,
                   help="images drawn with ground truth and predictions side by side (default 4, 0: none)")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    sources = [name for name, given in (("MODEL", args.model_path), ("--predictions", args.predictions),
                                        ("--server", args.server)) if given is not None]
    if len(sources) != 1:
        raise EvaluateArgumentsError(
            "give exactly one of MODEL (run directory or SavedModel), --predictions RESULTS.json or "
            f"--server URL --model-name NAME" + (f"; got {' and '.join(sources)}" if sources else ""))
    if args.model_name and not args.server:
        raise EvaluateArgumentsError("--model-name goes with --server")
    if args.batch_size < 1:
        raise EvaluateArgumentsError(f"--batch-size must be positive, got {args.batch_size}")
    if args.predictions is not None:
        return _evaluate_results_file(args)
    return _evaluate_model(args)


def _evaluate_results_file(args: argparse.Namespace) -> int:
    from detseg.evaluation.detection_report import build_detection_report

    report = build_detection_report(args.annotations, args.predictions, IOU_TYPE_CHOICES[args.iou_type or "bbox"],
                                     model=args.model, confusion_iou_threshold=args.confusion_iou,
                                     confusion_score_threshold=args.confusion_score)
    _write(args, report, args.predictions, with_masks="segm" in report["coco"])
    return 0


def _evaluate_model(args: argparse.Namespace) -> int:
    from detseg.data.coco import load_coco
    from detseg.evaluation.coco_eval import load_ground_truth
    from detseg.evaluation.coco_results import write_coco_results
    from detseg.evaluation.task_evaluation import INSTANCE, SEMANTIC, evaluate_task_predictions

    gt = load_ground_truth(load_coco(args.annotations, args.images))
    source = _open_model(args, gt.dataset)
    print(f"evaluating {source.description} ({source.task}) on {len(gt.dataset.images)} images of "
          f"{args.annotations}", file=sys.stderr, flush=True)
    results, report = evaluate_task_predictions(
        gt, source.task, source.predictions, source.truths, model=args.model or source.description,
        iou_types=IOU_TYPE_CHOICES[args.iou_type] if args.iou_type else None,
        confusion_iou_threshold=args.confusion_iou, confusion_score_threshold=args.confusion_score)
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_coco_results(results, args.out / RESULTS_FILENAME)
    print(f"results: {written} ({len(results)} detections)")
    with_masks = source.task == SEMANTIC or (source.task == INSTANCE and "segm" in report.get("coco", {}))
    _write(args, report, results, with_masks)
    return 0


@dataclass
class ModelSource:
    """Where a model's predictions come from: its task, the per-image predictions, the truths."""

    task: str
    predictions: Iterable
    truths: Mapping | None
    description: str


def _open_model(args: argparse.Namespace, dataset) -> ModelSource:
    """A run directory, a SavedModel or a served model, ready to predict on `dataset`'s images."""
    if args.server is not None:
        from detseg.serving.image_predictions import ServedModelImages

        return _exported_source(ServedModelImages(args.server, args.model_name, args.version), dataset, args)
    path = args.model_path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "config.yaml").is_file() or (path / "model.keras").is_file():
        return _run_directory_source(path, dataset, args)
    from detseg.serving.image_predictions import SavedModelImages, saved_model_version_dir

    try:
        saved_model_version_dir(path)
    except ValueError:
        raise EvaluateArgumentsError(
            f"{path}: neither a run directory (config.yaml, label_map.json, model.keras) nor a SavedModel "
            f"(saved_model.pb, or numbered version folders holding one)") from None
    return _exported_source(SavedModelImages(path), dataset, args)


def _run_directory_source(path: Path, dataset, args: argparse.Namespace) -> ModelSource:
    from detseg.data.errors import DatasetError
    from detseg.training.predictions import eval_targets, load_run_model, model_predictions

    run = load_run_model(path)
    if (run.label_map.coco_ids, run.label_map.names) != (dataset.label_map.coco_ids, dataset.label_map.names):
        raise DatasetError(f"{path / 'label_map.json'}: the model's classes {list(run.label_map.names)} "
                           f"(COCO ids {list(run.label_map.coco_ids)}) are not those of {args.annotations} "
                           f"{list(dataset.label_map.names)} (ids {list(dataset.label_map.coco_ids)})")
    predictions = model_predictions(run.model, dataset, run.task, run.image_size, args.batch_size)
    return ModelSource(run.task, predictions, eval_targets(dataset, run.task), f"run directory {path}")


def _exported_source(predict, dataset, args: argparse.Namespace) -> ModelSource:
    from detseg.evaluation.task_evaluation import CLASSIFICATION_LOCALIZATION
    from detseg.serving.image_predictions import image_predictions, task_of_outputs
    from detseg.training.predictions import eval_targets

    task = task_of_outputs(predict.output_names)
    truths = eval_targets(dataset, task)
    # cls+loc scores images with an object only, as its pipeline does (truths lists them).
    images = [(image.id, dataset.image_path(image)) for image in dataset.images
              if task != CLASSIFICATION_LOCALIZATION or image.id in truths]
    return ModelSource(task, image_predictions(predict, images, args.batch_size), truths,
                       predict.description)


def _write(args: argparse.Namespace, report: dict, results, with_masks: bool) -> None:
    from detseg.evaluation.report import write_report
    from detseg.evaluation.report_document import format_stats_table, format_value

    examples = _examples(args, results, with_masks)
    written = write_report(args.out, report, examples)
    for section in report.get("coco", {}).values():
        print(format_stats_table(section))
    for key in ("semantic", "classification_localization"):
        if key in report:
            shown = {k: v for k, v in report[key].items() if k in _HEADLINE_KEYS}
            print("  ".join(f"{k} {format_value(v)}" for k, v in shown.items()))
    print(f"report: {written['html']} (also {written['markdown'].name}, {written['json'].name})")


_HEADLINE_KEYS = ("mean_iou", "pixel_accuracy", "mean_dice", "accuracy", "localization_accuracy", "num_samples")


def _examples(args: argparse.Namespace, results, with_masks: bool) -> list[Path]:
    """Example pictures; without --images and no image files where guessed, a note instead."""
    from detseg.data.coco import load_coco
    from detseg.evaluation.example_images import render_examples

    if args.examples <= 0:
        return []
    dataset = load_coco(args.annotations, args.images)
    if args.images is None and not (dataset.images and dataset.image_path(dataset.images[0]).is_file()):
        print(f"detseg: note: no example pictures: no image files in {dataset.image_dir} "
              "(pass --images DIR)", file=sys.stderr)
        return []
    return render_examples(dataset, results, args.out, args.examples, args.confusion_score,
                           with_masks=with_masks)
