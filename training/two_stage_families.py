"""Faster R-CNN and Mask R-CNN families for the trainer (`model.family: faster_rcnn | mask_rcnn`).

The task models own their losses (`compute_loss`), so they compile with an optimizer only.
Stage 1 trains the heads on cached P3..P5 features through the same model class with no
backbone; stage 2 puts the same head layers on the backbone (`FasterRCNN.with_backbone`).
Evaluation: COCO bbox (and segm) AP with pycocotools, in original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from detseg.core.contract import DETECTION, FEATURE_LEVELS, FEATURE_STRIDES, INSTANCE
from detseg.models.rcnn.faster_rcnn import build_faster_rcnn
from detseg.models.rcnn.options import TwoStageOptions
from detseg.models.rcnn.mask_rcnn import build_mask_rcnn
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER
from detseg.training.detection_evaluation import coco_evaluator
from detseg.training.model_family import ModelFamily
from detseg.training.one_stage_families import no_compile_arguments

MODEL_DEFAULTS = TwoStageOptions()  # the config's defaults are the model's own


@dataclass(frozen=True)
class TwoStageHeadConfig:
    """`model.head` of faster_rcnn / mask_rcnn: widths, then `models.faster_rcnn_options` keys."""

    fpn_channels: int = 64
    box_head_units: int = 256
    mask_channels: int = 64
    mask_convs: int = 2
    anchor_sizes: tuple[float, ...] = MODEL_DEFAULTS.anchor_sizes
    anchor_scales: tuple[float, ...] = MODEL_DEFAULTS.anchor_scales
    anchor_ratios: tuple[float, ...] = MODEL_DEFAULTS.anchor_ratios
    rpn_samples: int = MODEL_DEFAULTS.rpn_samples
    rois_per_image: int = MODEL_DEFAULTS.rois_per_image
    roi_positive_fraction: float = MODEL_DEFAULTS.roi_positive_fraction
    masks_per_image: int = 32
    canonical_size: float = 112.0
    score_threshold: float = 0.05
    max_detections: int = 100
    init: Literal["he_normal", "glorot_uniform"] = DEFAULT_HEAD_INITIALIZER  # box fc + mask head kernels

    def options(self) -> dict:
        return {"anchor_sizes": self.anchor_sizes, "anchor_scales": self.anchor_scales,
                "anchor_ratios": self.anchor_ratios, "rpn_samples": self.rpn_samples,
                "rois_per_image": self.rois_per_image, "roi_positive_fraction": self.roi_positive_fraction,
                "masks_per_image": self.masks_per_image, "canonical_size": self.canonical_size,
                "nms": {"iou_threshold": 0.5, "score_threshold": self.score_threshold,
                        "max_detections": self.max_detections}}


def _image_size(feature_shapes: dict) -> tuple[int, int]:
    h, w, _ = feature_shapes["P3"]
    return (FEATURE_STRIDES["P3"] * int(h), FEATURE_STRIDES["P3"] * int(w))


def _build_head(with_masks: bool):
    def build_head(feature_shapes, num_classes: int, head: TwoStageHeadConfig):
        common = dict(image_size=_image_size(feature_shapes), levels=FEATURE_LEVELS, fpn_channels=head.fpn_channels,
                      box_head_units=head.box_head_units, options=head.options(), init=head.init)
        if with_masks:
            model = build_mask_rcnn(None, num_classes, mask_channels=head.mask_channels,
                                    mask_convs=head.mask_convs, **common)
        else:
            model = build_faster_rcnn(None, num_classes, **common)
        model.build({level: (None, *shape) for level, shape in feature_shapes.items()})
        return model
    return build_head


def build_model(backbone, head_model, head: TwoStageHeadConfig, image_size: int):
    """Stage 1: the features-only model itself; stage 2: the same heads on `backbone`."""
    return head_model if backbone is None else head_model.with_backbone(backbone)


FASTER_RCNN_FAMILY = ModelFamily(
    task=DETECTION, head_config=TwoStageHeadConfig, bottleneck_levels=FEATURE_LEVELS,
    build_head=_build_head(False), build_model=build_model, compile_kwargs=no_compile_arguments,
    evaluate=coco_evaluator(DETECTION), headline_metric="bbox_AP50")

MASK_RCNN_FAMILY = ModelFamily(
    task=INSTANCE, head_config=TwoStageHeadConfig, bottleneck_levels=FEATURE_LEVELS,
    build_head=_build_head(True), build_model=build_model, compile_kwargs=no_compile_arguments,
    evaluate=coco_evaluator(INSTANCE), headline_metric="segm_AP50")
