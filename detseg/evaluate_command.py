"""`detseg evaluate`: a COCO evaluation report for a COCO results file.

The numbers are pycocotools' own (see `evaluation.coco_eval`). Evaluating a model
directly (`detseg evaluate MODEL ...`) plugs in later through
`evaluation.detection_report.evaluate_predictions`, which takes any iterable of
`(image_id, predictions)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IOU_TYPE_CHOICES = {"bbox": ("bbox",), "segm": ("segm",), "both": ("bbox", "segm")}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="COCO evaluation report (JSON, Markdown, HTML, plots) for a results file",
        description="Evaluate COCO results against COCO ground truth with pycocotools and write "
                    "DIR/report.json, DIR/report.md, DIR/report.html and DIR/plots/*.png.")
    p.add_argument("--annotations", type=Path, required=True, help="ground truth: COCO instances JSON")
    p.add_argument("--predictions", type=Path, required=True,
                   help="COCO results JSON: [{image_id, category_id, score, bbox and/or segmentation}]")
    p.add_argument("--out", type=Path, required=True, help="folder for the report")
    p.add_argument("--iou-type", choices=sorted(IOU_TYPE_CHOICES), default="bbox",
                   help="box or mask IoU, or both (default: bbox)")
    p.add_argument("--confusion-iou", type=float, default=0.5,
                   help="IoU at which a detection matches an object in the confusion matrix (default 0.5)")
    p.add_argument("--confusion-score", type=float, default=0.5,
                   help="lowest score of a detection counted in the confusion matrix (default 0.5)")
    p.add_argument("--model", default=None, help="what made the predictions, recorded in the report")
    p.add_argument("--images", type=Path, default=None,
                   help="image folder for the example pictures (default: guessed from --annotations)")
    p.add_argument("--examples", type=int, default=4,
                   help="images drawn with ground truth and predictions side by side (default 4, 0: none)")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from evaluation.detection_report import build_detection_report
    from evaluation.report import write_report
    from evaluation.report_document import format_stats_table

    report = build_detection_report(args.annotations, args.predictions, IOU_TYPE_CHOICES[args.iou_type],
                                     model=args.model, confusion_iou_threshold=args.confusion_iou,
                                     confusion_score_threshold=args.confusion_score)
    examples = _examples(args, report)
    written = write_report(args.out, report, examples)
    for section in report["coco"].values():
        print(format_stats_table(section))
    print(f"report: {written['html']} (also {written['markdown'].name}, {written['json'].name})", file=sys.stdout)
    return 0


def _examples(args: argparse.Namespace, report: dict) -> list[Path]:
    """Example pictures; without --images and no image files where guessed, a note instead."""
    from data.coco import load_coco
    from evaluation.example_images import render_examples

    if args.examples <= 0:
        return []
    dataset = load_coco(args.annotations, args.images)
    if args.images is None and not (dataset.images and dataset.image_path(dataset.images[0]).is_file()):
        print(f"detseg: note: no example pictures: no image files in {dataset.image_dir} "
              "(pass --images DIR)", file=sys.stderr)
        return []
    return render_examples(dataset, args.predictions, args.out, args.examples, args.confusion_score,
                           with_masks="segm" in report["coco"])
