"""The YOLO and SSD families for the trainer (`model.family: yolo | ssd`).

The task models own their losses (`compute_loss`: compiled with an optimizer only) and
their decoding (`predict_step` returns detections after NMS in the letterbox frame).
Stage 1 wraps the network in the same task model with no backbone, so both stages
report the same losses. Evaluation: COCO bbox with pycocotools, in original pixels.
"""

from __future__ import annotations

from detseg.core.contract import DETECTION, FEATURE_LEVELS
from detseg.models.ssd.detector import SsdDetector
from detseg.models.ssd.head import SsdHeadConfig, build_ssd_network
from detseg.models.yolo.detector import YoloDetector
from detseg.models.yolo.head import YoloHeadConfig, build_yolo_network
from detseg.training.detection_evaluation import coco_evaluator
from detseg.training.model_family import ModelFamily


def no_compile_arguments(head_config) -> dict:
    """The task models compute their own loss: `compile` takes only the optimizer."""
    return {}


YOLO_FAMILY = ModelFamily(
    task=DETECTION,
    head_config=YoloHeadConfig,
    bottleneck_levels=FEATURE_LEVELS,
    build_head=lambda shapes, num_classes, head: build_yolo_network(shapes, num_classes, head),
    build_model=lambda backbone, network, head, size: YoloDetector(backbone, network, head, (size, size)),
    compile_kwargs=no_compile_arguments,
    evaluate=coco_evaluator(DETECTION),
    headline_metric="bbox_AP50",
)

SSD_FAMILY = ModelFamily(
    task=DETECTION,
    head_config=SsdHeadConfig,
    bottleneck_levels=FEATURE_LEVELS,
    build_head=lambda shapes, num_classes, head: build_ssd_network(shapes, num_classes, head),
    build_model=lambda backbone, network, head, size: SsdDetector(backbone, network, head, (size, size)),
    compile_kwargs=no_compile_arguments,
    evaluate=coco_evaluator(DETECTION),
    headline_metric="bbox_AP50",
)
