"""`detseg evaluate`: the evaluation report of a results file, a trained model or a served one.

    detseg evaluate --annotations GT.json --predictions RESULTS.json --out DIR
    detseg evaluate runs/shapes --annotations GT.json [--images DIR] --out DIR     # run directory
    detseg evaluate exports/shapes[/3] --annotations GT.json --out DIR            # SavedModel
    detseg evaluate --server http://127.0.0.1:8501 --model-name shapes --annotations GT.json --out DIR

The command parses its arguments, calls `detseg.workflows.evaluate` (which picks the
model source: run directory, SavedModel or server) and prints the headline numbers.
The model modes write `DIR/coco_results.json` beside the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IOU_TYPE_CHOICES = {"bbox": ("bbox",), "segm": ("segm",), "both": ("bbox", "segm")}


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
    from detseg.workflows.evaluate import EvaluateArgumentsError, evaluate_model, evaluate_results_file

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
    common = dict(images=args.images, description=args.model, confusion_iou=args.confusion_iou,
                  confusion_score=args.confusion_score, examples=args.examples, log=_note)
    if args.predictions is not None:
        evaluation = evaluate_results_file(args.annotations, args.predictions, args.out,
                                           iou_types=IOU_TYPE_CHOICES[args.iou_type or "bbox"], **common)
    else:
        evaluation = evaluate_model(args.model_path, args.annotations, args.out, server=args.server,
                                    model_name=args.model_name, version=args.version,
                                    iou_types=IOU_TYPE_CHOICES[args.iou_type] if args.iou_type else None,
                                    batch_size=args.batch_size, **common)
        print(f"results: {evaluation.files['results']} ({evaluation.num_results} detections)")
    _print_summary(evaluation)
    return 0


def _note(message: str) -> None:
    print(f"detseg: {message}" if message.startswith("note:") else message, file=sys.stderr, flush=True)


def _print_summary(evaluation) -> None:
    from detseg.evaluation.report_document import format_stats_table, format_value

    report, files = evaluation.report, evaluation.files
    for section in report.get("coco", {}).values():
        print(format_stats_table(section))
    for key in ("semantic", "classification_localization"):
        if key in report:
            shown = {k: v for k, v in report[key].items() if k in _HEADLINE_KEYS}
            print("  ".join(f"{k} {format_value(v)}" for k, v in shown.items()))
    print(f"report: {files['html']} (also {files['markdown'].name}, {files['json'].name})")


_HEADLINE_KEYS = ("mean_iou", "pixel_accuracy", "mean_dice", "accuracy", "localization_accuracy", "num_samples")
