"""The YOLO network on top of a backbone: PAN-FPN neck + decoupled anchor-free head.

`build_yolo_network(feature_shapes, num_classes, config)` is a functional Keras model
from backbone features to raw predictions for every grid point:

    inputs:  {"P3": [B, H/8, W/8, c3], "P4": [B, H/16, W/16, c4], "P5": [B, H/32, W/32, c5]}
    outputs: {"box_distribution": float32 [B, A, 4 * reg_max],
              "class_logits":     float32 [B, A, C]}

with `A = sum over levels of h * w` (one prior per cell: the head is anchor-free), in
the order of `models.anchors.grid_points(image_size, (8, 16, 32))`. For each side
(left, top, right, bottom) the box output holds `reg_max` logits of a discrete
distribution over distances `0..reg_max-1` strides from the cell centre (distribution
focal loss, Li et al. 2020; YOLOv8); the distance is its expectation. Class logits are
independent per class (sigmoid, no background class).

Per level the head is "decoupled" (YOLOX/YOLOv8): a box branch and a class branch,
each two 3x3 conv_bn_silu and a 1x1 prediction conv. Separate weights per level. The
head's convolutions start from `config.init`; the prediction convs, flattening and
concatenation are float32 under any mixed-precision policy (`HEAD_OUTPUT_DTYPE`).

This model is what stage 1 of transfer learning trains on cached backbone features;
`YoloDetector` puts it behind the backbone for stage 2 and inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from detseg.core.contract import FEATURE_LEVELS, FEATURE_STRIDES
from detseg.models.dense_detector import DenseHeadConfig
from detseg.models.necks.pan_fpn import build_pan_fpn, conv_bn_silu
from detseg.models.task_model import HEAD_OUTPUT_DTYPE

YOLO_STRIDES = tuple(FEATURE_STRIDES[level] for level in FEATURE_LEVELS)  # (8, 16, 32)
CLASS_PRIOR = 0.01  # initial class probability: the loss starts near the background answer


class YoloConfigError(ValueError):
    """YOLO options that cannot build a network."""


@dataclass(frozen=True)
class YoloHeadConfig(DenseHeadConfig):
    """Architecture, assignment, loss and post-processing options of a YOLO detector.

    Architecture: `neck_widths` (P3, P4, P5 channels after the neck), `neck_depth`
    (bottlenecks per CSP block), `box_width` / `class_width` (head branch channels; 0:
    derive from the P3 width as YOLOv8 does), `reg_max` (distance bins per side: the
    largest box side it can reach is about `2 * (reg_max - 1) * stride`).
    Assignment (task-aligned, `models.yolo_assigner`): `assign_topk`, `assign_alpha`,
    `assign_beta`. Loss weights: `box_loss_weight` (GIoU), `class_loss_weight` (BCE),
    `dfl_loss_weight`. Post-processing (`models.nms.NmsConfig`): `score_threshold`,
    `iou_threshold`, `max_detections`. `class_names`: index -> name (empty: "class_<i>").
    """

    neck_widths: tuple[int, int, int] = (64, 128, 256)
    neck_depth: int = 1
    box_width: int = 0
    class_width: int = 0
    reg_max: int = 16
    assign_topk: int = 10
    assign_alpha: float = 0.5
    assign_beta: float = 6.0
    box_loss_weight: float = 7.5
    class_loss_weight: float = 0.5
    dfl_loss_weight: float = 1.5

    def __post_init__(self):
        if len(self.neck_widths) != 3 or min(self.neck_widths) < 1 or self.neck_depth < 0:
            raise YoloConfigError(f"neck_widths must be 3 positive ints and neck_depth >= 0, got "
                                  f"{self.neck_widths} and {self.neck_depth}")
        if self.reg_max < 2 or self.assign_topk < 1:
            raise YoloConfigError(f"reg_max must be >= 2 and assign_topk >= 1, got {self.reg_max} "
                                  f"and {self.assign_topk}")
        if min(self.box_loss_weight, self.class_loss_weight, self.dfl_loss_weight) < 0:
            raise YoloConfigError("loss weights must be >= 0")

    def branch_widths(self, num_classes: int) -> tuple[int, int]:
        """`(box_width, class_width)`: the configured ones, or YOLOv8's rule from the P3 width."""
        p3 = int(self.neck_widths[0])
        box = self.box_width or max(16, p3 // 4, 4 * self.reg_max)
        cls = self.class_width or max(p3, min(int(num_classes), 100))
        return int(box), int(cls)


def _prediction_conv(x, filters: int, bias: float, name: str, init: str):
    return keras.layers.Conv2D(filters, 1, name=name, kernel_initializer=init, dtype=HEAD_OUTPUT_DTYPE,
                               bias_initializer=keras.initializers.Constant(bias))(x)


def _flatten_cells(x, name: str):
    """`[B, h, w, D]` -> `[B, h * w, D]`, row-major like `grid_points`."""
    return keras.layers.Reshape((-1, int(x.shape[-1])), name=name, dtype=HEAD_OUTPUT_DTYPE)(x)


def _level_head(feature, level: str, num_classes: int, config: YoloHeadConfig):
    box_width, class_width = config.branch_widths(num_classes)
    init = config.init
    box = conv_bn_silu(feature, box_width, 3, name=f"head_{level}_box1", kernel_initializer=init)
    box = conv_bn_silu(box, box_width, 3, name=f"head_{level}_box2", kernel_initializer=init)
    box = _prediction_conv(box, 4 * config.reg_max, 0.0, f"head_{level}_box_pred", init)
    cls = conv_bn_silu(feature, class_width, 3, name=f"head_{level}_class1", kernel_initializer=init)
    cls = conv_bn_silu(cls, class_width, 3, name=f"head_{level}_class2", kernel_initializer=init)
    prior_logit = -math.log((1.0 - CLASS_PRIOR) / CLASS_PRIOR)
    cls = _prediction_conv(cls, int(num_classes), prior_logit, f"head_{level}_class_pred", init)
    return _flatten_cells(box, f"head_{level}_box_flat"), _flatten_cells(cls, f"head_{level}_class_flat")


def build_yolo_network(feature_shapes: dict, num_classes: int, config: YoloHeadConfig = YoloHeadConfig(),
                       name: str = "yolo_network") -> keras.Model:
    """Neck + head: `{"P3", "P4", "P5"}` features -> raw predictions (module docstring).

    `feature_shapes`: `{level: (h, w, c)}` of the backbone outputs (`models.backbones.feature_shape`).
    """
    if int(num_classes) < 1:
        raise YoloConfigError(f"num_classes must be >= 1, got {num_classes}")
    missing = [level for level in FEATURE_LEVELS if level not in feature_shapes]
    if missing:
        raise YoloConfigError(f"YOLO needs backbone features {FEATURE_LEVELS}; missing {missing}")
    inputs = {level: keras.Input(shape=tuple(int(d) for d in feature_shapes[level]), name=level)
              for level in FEATURE_LEVELS}
    fused = build_pan_fpn(inputs, config.neck_widths, config.neck_depth)
    boxes, classes = zip(*(_level_head(fused[level], level, num_classes, config) for level in FEATURE_LEVELS))
    outputs = {
        "box_distribution": keras.layers.Concatenate(axis=1, name="box_distribution",
                                                     dtype=HEAD_OUTPUT_DTYPE)(list(boxes)),
        "class_logits": keras.layers.Concatenate(axis=1, name="class_logits", dtype=HEAD_OUTPUT_DTYPE)(list(classes)),
    }
    return keras.Model(inputs, outputs, name=name)
