"""Write a report folder: report.json, report.md, report.html and the PNG plots.

    out_dir/report.json     every number, with source and settings (machine-readable)
    out_dir/report.md       tables; plots linked from plots/
    out_dir/report.html     tables and plots embedded (base64 PNG): one self-contained file
    out_dir/plots/*.png     PR curves, per-class bars, confusion matrix heatmaps
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from detseg.core.atomic_files import write_json_atomic, write_text_atomic
from detseg.evaluation.plots import plot_confusion_matrix, plot_per_class_bars, plot_pr_curves
from detseg.evaluation.report_document import report_blocks
from detseg.evaluation.report_render import to_html, to_markdown

PLOTS_DIR = "plots"


def write_report(out_dir: str | os.PathLike, report: dict[str, Any],
                 examples: Sequence[str | os.PathLike] = ()) -> dict[str, Path]:
    """Write `report` (see `evaluation.report_contents`) into `out_dir`.

    `examples`: PNG files (e.g. predictions and ground truth side by side) to show in the
    Markdown/HTML report. The plot and example files are listed in the JSON under
    `plots` and `examples` (paths relative to `out_dir`). Returns the written files by
    name: "json", "markdown", "html" and one entry per plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = draw_report_plots(report, out_dir / PLOTS_DIR)
    examples = [Path(p) for p in examples]
    report = {**report, "plots": {key: _relative(path, out_dir) for key, path in plots.items()},
              "examples": [_relative(path, out_dir) for path in examples]}
    written = {"json": write_json_atomic(report, out_dir / "report.json")}
    blocks = report_blocks(report, plots, examples)
    written["markdown"] = write_text_atomic(to_markdown(blocks, out_dir), out_dir / "report.md")
    written["html"] = write_text_atomic(to_html(blocks, "detseg evaluation report"), out_dir / "report.html")
    return {**written, **plots}


def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def draw_report_plots(report: dict[str, Any], plot_dir: Path) -> dict[str, Path]:
    """Every plot the report's sections call for, keyed by name, as PNG files in `plot_dir`."""
    plots: dict[str, Path] = {}
    for iou_type, section in report.get("coco", {}).items():
        rows = section["per_class"]
        plots[f"{iou_type}_per_class_ap"] = plot_per_class_bars(
            [r["name"] for r in rows], [r["AP"] for r in rows], plot_dir / f"{iou_type}_per_class_ap.png",
            f"COCO {iou_type}: AP per class (IoU 0.50:0.95)", "AP")
        curves = plot_pr_curves(section["pr_curves"], plot_dir / f"{iou_type}_pr_curves.png",
                                f"COCO {iou_type}: precision-recall per class")
        if curves:
            plots[f"{iou_type}_pr_curves"] = curves
    if "confusion_matrix" in report:
        confusion = report["confusion_matrix"]
        plots["confusion_matrix"] = plot_confusion_matrix(
            confusion["matrix"], confusion["labels"], plot_dir / "confusion_matrix.png",
            f"Detections at IoU >= {confusion['iou_threshold']}, score >= {confusion['score_threshold']}")
    if "semantic" in report:
        semantic = report["semantic"]
        plots["semantic_per_class_iou"] = plot_per_class_bars(
            semantic["class_names"], [r["iou"] for r in semantic["per_class"]],
            plot_dir / "semantic_per_class_iou.png", "IoU per class", "IoU")
        plots["semantic_confusion_matrix"] = plot_confusion_matrix(
            semantic["confusion_matrix"], semantic["class_names"], plot_dir / "semantic_confusion_matrix.png",
            "Pixels")
    if "classification_localization" in report:
        metrics = report["classification_localization"]
        plots["localization_confusion_matrix"] = plot_confusion_matrix(
            metrics["confusion_matrix"], metrics["class_names"], plot_dir / "localization_confusion_matrix.png",
            "Images")
    return plots
