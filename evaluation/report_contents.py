"""The report dict: where the numbers came from, and the sections `write_report` renders.

A report is a JSON-ready dict. Every report has `report_version`, `created` (UTC, ISO
8601), `kind`, `source` (dataset, predictions, model) and `settings`; then any of these
sections: `coco` (`{"bbox": ..., "segm": ...}`, each `evaluate_coco`'s dict),
`confusion_matrix` (detection, with background), `semantic`
(`SemanticSegmentationMetrics.result()`), `classification_localization`
(`ClassificationLocalizationMetrics.result()`), `examples` (image files).
"""

from __future__ import annotations

import datetime
from importlib import metadata
from typing import Any

from pycocotools.cocoeval import Params

from detseg.data.coco import CocoDataset

REPORT_VERSION = 1


def new_report(kind: str, source: dict[str, Any] | None = None,
               settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """An empty report of `kind` ("detection", "semantic_segmentation", "classification_localization")."""
    return {
        "report_version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "source": dict(source or {}),
        "settings": dict(settings or {}),
    }


def dataset_summary(dataset: CocoDataset) -> dict[str, Any]:
    """What the report says about the ground truth: file, counts and the class table."""
    label_map = dataset.label_map
    return {
        "annotations": str(dataset.source) if dataset.source else None,
        "num_images": len(dataset.images),
        "num_annotations": len(dataset.annotations),
        "num_crowd": sum(1 for a in dataset.annotations if a.iscrowd),
        "categories": label_map.to_dict()["classes"],
    }


def cocoeval_settings(iou_types: list[str], segm_area: str = "pycocotools") -> dict[str, Any]:
    """pycocotools' default parameters, as used (we never change them), and where segm
    detections' areas came from (`evaluation.coco_eval.SEGM_AREAS`)."""
    params = Params(iouType="bbox")
    return {
        "iou_types": list(iou_types),
        "evaluator": f"pycocotools {metadata.version('pycocotools')} COCOeval, default parameters",
        **({"segm_object_areas": segm_area} if "segm" in iou_types else {}),
        "iou_thresholds": [round(float(t), 2) for t in params.iouThrs],
        "recall_thresholds": len(params.recThrs),
        "max_detections": list(params.maxDets),
        "area_ranges": {label: [float(low), float(high)]
                        for label, (low, high) in zip(params.areaRngLbl, params.areaRng)},
    }


def semantic_report(metrics: dict[str, Any], source: dict[str, Any] | None = None,
                    settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A report around `SemanticSegmentationMetrics.result()`."""
    report = new_report("semantic_segmentation", source, settings)
    report["semantic"] = metrics
    return report


def localization_report(metrics: dict[str, Any], source: dict[str, Any] | None = None,
                        settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A report around `ClassificationLocalizationMetrics.result()`."""
    report = new_report("classification_localization", source, settings)
    report["classification_localization"] = metrics
    return report
