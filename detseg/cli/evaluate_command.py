"""`detseg evaluate`: the evaluation report of a results file, a trained model or a served one.

    detseg evaluate --annotations GT.json --predictions RESULTS.json --out DIR
    detseg evaluate runs/shapes --annotations GT.json [--images DIR] --out DIR     # run directory
    detseg evaluate exports/shapes[/3] --annotations GT.json --out DIR            # SavedModel
    detseg evaluate --server http://127.0.0.1:8501 --model-name shapes --annotations GT.json --out DIR
    detseg evaluate --ensemble runs/a runs/b runs/c --annotations GT.json --out DIR  # merged in memory

The command parses its arguments, calls `detseg.workflows.evaluate` (which picks the
model source: run directory, ensemble of run directories, SavedModel or server) and prints
the headline numbers. The model modes write `DIR/coco_results.json` beside the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detseg.cli.arguments import run_directory

IOU_TYPE_CHOICES = {"bbox": ("bbox",), "segm": ("segm",), "both": ("bbox", "segm")}
SEGM_AREA_CHOICES = ("pycocotools", "mask")  # evaluation.coco_eval.SEGM_AREAS, without importing it


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluation report (JSON, Markdown, HTML, plots) of a results file or a model",
        description="Evaluate COCO results, a run directory's model, an exported SavedModel or a served "
                    "model against COCO ground truth (pycocotools for detection) and write "
                    "DIR/report.json, DIR/report.md, DIR/report.html and DIR/plots/*.png.")
    p.add_argument("model_path", nargs="?", type=Path, default=None, metavar="MODEL",
                   help="a run directory (runs/<name>), a SavedModel version folder, or a base path "
                        "holding numbered versions (the latest is evaluated); default: none, give "
                        "--predictions or --server instead")
    p.add_argument("--annotations", type=Path, required=True, help="ground truth: COCO instances JSON (required)")
    p.add_argument("--predictions", type=Path, default=None,
                   help="COCO results JSON: [{image_id, category_id, score, bbox and/or segmentation}] "
                        "(default: none, evaluate MODEL or --server)")
    p.add_argument("--server", default=None,
                   help="evaluate a served model: http://host:8501 (REST), grpc://host:8500 or host:8500 "
                        "(gRPC) (default: none)")
    p.add_argument("--ensemble", nargs="+", type=run_directory, default=None, metavar="RUN_DIR",
                   help="evaluate several finished runs of one family, class list and image size as ONE model, "
                        "their predictions merged as `detseg export --ensemble` merges them (default: none)")
    p.add_argument("--model-name", dest="model_name", default=None,
                   help="model name on the server (required with --server)")
    p.add_argument("--version", type=int, default=None, help="model version on the server (default: latest)")
    p.add_argument("--out", type=Path, required=True, help="folder for the report (required)")
    p.add_argument("--images", type=Path, default=None,
                   help="image folder of --annotations (default: guessed from its location)")
    p.add_argument("--iou-type", choices=sorted(IOU_TYPE_CHOICES), default=None,
                   help="box or mask IoU, or both (default: a results file's content: segmentations -> "
                        "segm, boxes and segmentations -> both, boxes only -> bbox; a model's task)")
    p.add_argument("--segm-area", choices=SEGM_AREA_CHOICES, default="pycocotools",
                   help="object areas of segm detections, which set the small/medium/large ranges: "
                        "pycocotools (its loadRes: the results' box area when they carry boxes) or mask "
                        "(detectron2's: each mask's area, the results' boxes set aside) (default: pycocotools)")
    p.add_argument("--semantic-masks", type=Path, default=None, metavar="DIR",
                   help="folder of semantic mask PNGs (DIR/<image stem>.png, value = COCO category id) "
                        "that are a semantic model's ground truth, as data.semantic_masks in training "
                        "(default: rendered from --annotations)")
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
    from detseg.workflows.evaluate import evaluate_model, evaluate_results_file

    _check_arguments(args)
    common = dict(images=args.images, description=args.model, confusion_iou=args.confusion_iou,
                  confusion_score=args.confusion_score, examples=args.examples, segm_area=args.segm_area,
                  iou_types=IOU_TYPE_CHOICES[args.iou_type] if args.iou_type else None, log=_note)
    if args.predictions is not None:
        evaluation = evaluate_results_file(args.annotations, args.predictions, args.out, **common)
    else:
        evaluation = evaluate_model(args.model_path, args.annotations, args.out, server=args.server,
                                    model_name=args.model_name, version=args.version,
                                    semantic_masks=args.semantic_masks, batch_size=args.batch_size,
                                    ensemble=args.ensemble, **common)
        print(f"results: {evaluation.files['results']} ({evaluation.num_results} detections)")
    _print_summary(evaluation)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Every flag checked in its own terms before anything heavy (TensorFlow) loads."""
    from detseg.workflows.evaluate import EvaluateArgumentsError, server_address_problem

    sources = [name for name, given in (("MODEL", args.model_path), ("--predictions", args.predictions),
                                        ("--server", args.server), ("--ensemble", args.ensemble))
               if given is not None]
    if len(sources) != 1:
        raise EvaluateArgumentsError(
            "give exactly one of MODEL (run directory or SavedModel), --predictions RESULTS.json, "
            f"--server URL --model-name NAME or --ensemble RUN_DIR RUN_DIR ..."
            + (f"; got {' and '.join(sources)}" if sources else ""))
    if args.server is not None:
        problem = server_address_problem(args.server)
        if problem:
            raise EvaluateArgumentsError(f"--server {args.server}: {problem}")
        if not args.model_name:
            raise EvaluateArgumentsError("--server needs --model-name NAME (the model's name on the server)")
    for flag, given in (("--model-name", args.model_name), ("--version", args.version)):
        if given is not None and args.server is None:
            raise EvaluateArgumentsError(f"{flag} goes with --server")
    if args.version is not None and args.version < 1:
        raise EvaluateArgumentsError(f"--version must be >= 1, got {args.version}")
    if args.ensemble is not None and len(args.ensemble) < 2:
        raise EvaluateArgumentsError(f"--ensemble needs at least 2 run directories, got {len(args.ensemble)} "
                                     f"(evaluate a single run as MODEL)")
    if args.semantic_masks is not None and args.predictions is not None:
        raise EvaluateArgumentsError("--semantic-masks is the ground truth of a semantic model (MODEL or "
                                     "--server); a --predictions file is scored against --annotations")
    for flag, folder in (("--semantic-masks", args.semantic_masks), ("--images", args.images)):
        if folder is not None and not folder.is_dir():
            raise EvaluateArgumentsError(f"{flag} {folder}: no such folder")
    if args.out.exists() and not args.out.is_dir():
        raise EvaluateArgumentsError(f"--out {args.out}: exists and is not a folder")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--examples", args.examples, 0)):
        if value < low:
            raise EvaluateArgumentsError(f"{flag} must be >= {low}, got {value}")
    for flag, value in (("--confusion-iou", args.confusion_iou), ("--confusion-score", args.confusion_score)):
        if not 0 <= value <= 1:
            raise EvaluateArgumentsError(f"{flag} must be between 0 and 1, got {value}")


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
