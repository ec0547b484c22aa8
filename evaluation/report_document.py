"""Report dict -> document blocks (tables, plots), the same for Markdown and HTML.

Numbers show with 3 decimals; None (pycocotools' -1: no ground truth to measure) shows
as "n/a".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detseg.evaluation.coco_eval import STAT_NAMES
from detseg.evaluation.report_render import Block, Heading, Image, Paragraph, Table

NOT_AVAILABLE = "n/a"
MAX_TABLE_CLASSES = 15  # larger confusion matrices are shown as a heatmap only

STAT_DESCRIPTIONS = {
    "AP": "AP, IoU 0.50:0.95, all areas, 100 dets", "AP50": "AP, IoU 0.50, all areas, 100 dets",
    "AP75": "AP, IoU 0.75, all areas, 100 dets", "APs": "AP, IoU 0.50:0.95, small (< 32²), 100 dets",
    "APm": "AP, IoU 0.50:0.95, medium (32²..96²), 100 dets",
    "APl": "AP, IoU 0.50:0.95, large (> 96²), 100 dets",
    "AR1": "AR, IoU 0.50:0.95, all areas, 1 det", "AR10": "AR, IoU 0.50:0.95, all areas, 10 dets",
    "AR100": "AR, IoU 0.50:0.95, all areas, 100 dets", "ARs": "AR, IoU 0.50:0.95, small, 100 dets",
    "ARm": "AR, IoU 0.50:0.95, medium, 100 dets", "ARl": "AR, IoU 0.50:0.95, large, 100 dets",
}


def format_value(value: Any) -> str:
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def format_stats_table(section: dict[str, Any]) -> str:
    """The 12 COCO stats of one `evaluate_coco` section as aligned plain text."""
    lines = [f"COCO {section['iou_type']}: {section['num_detections']} detections, {section['num_images']} images"
             + (f"; {section['object_areas']}" if section.get("object_areas") else "")]
    for name in STAT_NAMES:
        lines.append(f"  {name:<6} {format_value(section['stats'][name]):>6}  {STAT_DESCRIPTIONS[name]}")
    return "\n".join(lines)


def report_blocks(report: dict[str, Any], plots: dict[str, Path], examples: list[Path]) -> list[Block]:
    """All blocks of the report, in reading order; `plots` maps plot keys to PNG files."""
    blocks: list[Block] = [Heading("detseg evaluation report", 1), *_source_blocks(report)]
    for iou_type, section in report.get("coco", {}).items():
        blocks += _coco_blocks(iou_type, section, plots)
    if "confusion_matrix" in report:
        blocks += _confusion_blocks(report["confusion_matrix"], plots.get("confusion_matrix"))
    if "semantic" in report:
        blocks += _semantic_blocks(report["semantic"], plots)
    if "classification_localization" in report:
        blocks += _localization_blocks(report["classification_localization"], plots)
    if examples:
        blocks.append(Heading("Examples: prediction and ground truth"))
        blocks += [Image(path, path.stem.replace("_", " ")) for path in examples]
    blocks += [Heading("Settings"), _key_value_table(_flatten(report.get("settings", {})))]
    return blocks


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in mapping.items():
        if isinstance(value, dict) and key != "area_ranges":
            rows += _flatten(value, f"{prefix}{key}.")
        elif key != "categories":
            rows.append((f"{prefix}{key}", value))
    return rows


def _key_value_table(rows: list[tuple[str, Any]], caption: str = "") -> Table:
    return Table(["", "value"], [[key, format_value(value)] for key, value in rows], caption)


def _source_blocks(report: dict[str, Any]) -> list[Block]:
    rows = [("kind", report.get("kind")), ("created", report.get("created"))]
    rows += _flatten(report.get("source", {}))
    return [_key_value_table(rows, "Source")]


def _coco_blocks(iou_type: str, section: dict[str, Any], plots: dict[str, Path]) -> list[Block]:
    blocks: list[Block] = [
        Heading(f"COCO {iou_type} evaluation"),
        Paragraph(f"{section['num_detections']} detections on {section['num_images']} images; "
                  "pycocotools COCOeval, default parameters"
                  + (f"; {section['object_areas']}" if section.get("object_areas") else "")
                  + ". n/a: no ground truth to measure."),
        Table(["stat", "value", "meaning"],
              [[name, format_value(section["stats"][name]), STAT_DESCRIPTIONS[name]] for name in STAT_NAMES],
              "The 12 COCO stats", {1}),
        Table(["class", "COCO id", "objects", "AP", "AP50", "AP75", "AR100"],
              [[row["name"], str(row["coco_id"]), str(row["num_gt"]), *(format_value(row[k])
                for k in ("AP", "AP50", "AP75", "AR100"))] for row in section["per_class"]],
              "Per class (IoU 0.50:0.95 unless named; objects: non-crowd ground truth)", {1, 2, 3, 4, 5, 6}),
    ]
    for key, alt in ((f"{iou_type}_per_class_ap", f"{iou_type}: AP per class"),
                     (f"{iou_type}_pr_curves",
                      f"{iou_type}: precision-recall curves per class, IoU 0.50 and 0.75")):
        if key in plots:
            blocks.append(Image(plots[key], alt))
    return blocks


def _matrix_table(matrix: list[list[int]], labels: list[str], caption: str) -> Table:
    headers = ["true \\ predicted", *labels]
    rows = [[labels[i], *(str(v) for v in row)] for i, row in enumerate(matrix)]
    return Table(headers, rows, caption, set(range(1, len(labels) + 1)))


def _confusion_blocks(confusion: dict[str, Any], plot: Path | None) -> list[Block]:
    blocks: list[Block] = [
        Heading("Detection confusion matrix"),
        Paragraph(f"Detections with score >= {confusion['score_threshold']} matched to objects at box IoU >= "
                  f"{confusion['iou_threshold']}. Column 'background': missed objects; row 'background': "
                  "spurious detections."),
    ]
    if len(confusion["labels"]) <= MAX_TABLE_CLASSES + 1:
        blocks.append(_matrix_table(confusion["matrix"], confusion["labels"],
                                    "Counts, rows true, columns predicted"))
    if plot:
        blocks.append(Image(plot, "detection confusion matrix (colour: share of row)"))
    return blocks


def _semantic_blocks(metrics: dict[str, Any], plots: dict[str, Path]) -> list[Block]:
    blocks: list[Block] = [
        Heading("Semantic segmentation"),
        _key_value_table([("mean IoU", metrics["mean_iou"]), ("pixel accuracy", metrics["pixel_accuracy"]),
                          ("mean Dice", metrics["mean_dice"]), ("pixels counted", metrics["num_pixels"])],
                         "Summary"),
        Table(["class", "IoU", "Dice", "true pixels", "predicted pixels"],
              [[row["name"], format_value(row["iou"]), format_value(row["dice"]), str(row["gt_pixels"]),
                str(row["predicted_pixels"])] for row in metrics["per_class"]], "Per class", {1, 2, 3, 4}),
    ]
    if len(metrics["class_names"]) <= MAX_TABLE_CLASSES:
        blocks.append(_matrix_table(metrics["confusion_matrix"], metrics["class_names"], "Pixel counts"))
    for key, alt in (("semantic_per_class_iou", "IoU per class"),
                     ("semantic_confusion_matrix", "pixel confusion matrix")):
        if key in plots:
            blocks.append(Image(plots[key], alt))
    return blocks


def _localization_blocks(metrics: dict[str, Any], plots: dict[str, Path]) -> list[Block]:
    blocks: list[Block] = [
        Heading("Classification and localization"),
        _key_value_table([("accuracy", metrics["accuracy"]), ("mean IoU", metrics["mean_iou"]),
                          (f"localization accuracy (class right and IoU >= {metrics['iou_threshold']})",
                           metrics["localization_accuracy"]), ("images", metrics["num_samples"])], "Summary"),
    ]
    if len(metrics["class_names"]) <= MAX_TABLE_CLASSES:
        blocks.append(_matrix_table(metrics["confusion_matrix"], metrics["class_names"], "Image counts"))
    if "localization_confusion_matrix" in plots:
        blocks.append(Image(plots["localization_confusion_matrix"], "class confusion matrix"))
    return blocks
