"""The SSD network on a backbone: extra coarse levels + per-level box and class predictors.

`build_ssd_network(feature_shapes, num_classes, config)` is a functional Keras model
from backbone features to raw predictions for every default box:

    inputs:  {"P3": [B, H/8, W/8, c3], "P4": [B, H/16, W/16, c4], "P5": [B, H/32, W/32, c5]}
    outputs: {"box_deltas":   float32 [B, A, 4]      center-size deltas (models.box_coding),
              "class_logits": float32 [B, A, C + 1]  column SSD_BACKGROUND (0) = background,
                                                     column c + 1 = class c}

Levels: P3, P4, P5 from the backbone, then `extra_levels` more (P6, P7, ...) made from
P5 by 1x1 + stride-2 3x3 conv pairs, as in SSD's extra feature layers: the coarse maps
carry the large default boxes. `A = sum(h_i * w_i) * K` with `K =
config.anchors().anchors_per_location` default boxes per cell, in the order of
`models.anchors.AnchorGenerator` (the head's widths derive from the anchors, K * 4 and
K * (C + 1), never from literals).

Each level predicts with a 3x3 conv (Liu et al. 2016), after an optional shared-width
3x3 conv_bn_relu (`head_width > 0`) that gives the small backbone features some room.
The convolutions start from `config.init`; the prediction convs, flattening and
concatenation are float32 under any mixed-precision policy (`HEAD_OUTPUT_DTYPE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from detseg.core.contract import FEATURE_LEVELS, FEATURE_STRIDES
from detseg.models.dense_detector import DenseHeadConfig
from detseg.models.ops.anchors import AnchorGenerator, linear_anchor_sizes
from detseg.models.ops.box_coding import SSD_VARIANCES
from detseg.models.task_model import HEAD_OUTPUT_DTYPE

SSD_BACKGROUND = 0  # class-logit column of "no object"; class c is column c + 1
BACKBONE_STRIDES = tuple(FEATURE_STRIDES[level] for level in FEATURE_LEVELS)  # (8, 16, 32)
BACKGROUND_PRIOR = 0.99  # initial background probability: most default boxes are background


class SsdConfigError(ValueError):
    """SSD options that cannot build a network."""


@dataclass(frozen=True)
class SsdHeadConfig(DenseHeadConfig):
    """Architecture, default boxes, matching, loss and post-processing of an SSD detector.

    Levels: `extra_levels` beyond P5 (`extra_width` channels), `head_width` (0: predict
    straight from the features). Default boxes (`models.anchors`): base sizes from
    `min_scale` to `max_scale` of the image side over the levels, times `anchor_scales`,
    in `aspect_ratios`; `variances` of the box coding. Matching (`models.matching.IouMatcher`):
    `positive_iou`, `negative_iou`. Loss: `negatives_per_positive` (hard negative mining,
    3 in SSD), `min_negatives` per image (so images without objects still teach
    background), `box_loss_weight`, `class_loss_weight`. Post-processing: `score_threshold`,
    `iou_threshold`, `max_detections`. `class_names`: index -> name (empty: "class_<i>").
    """

    extra_levels: int = 2
    extra_width: int = 128
    head_width: int = 96
    min_scale: float = 0.08
    max_scale: float = 0.9
    anchor_scales: tuple[float, ...] = (1.0, 1.4142)
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    variances: tuple[float, float, float, float] = SSD_VARIANCES
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    negatives_per_positive: float = 3.0
    min_negatives: int = 4
    box_loss_weight: float = 1.0
    class_loss_weight: float = 1.0

    def __post_init__(self):
        if self.extra_levels < 0 or self.extra_width < 1 or self.head_width < 0:
            raise SsdConfigError(f"extra_levels >= 0, extra_width >= 1 and head_width >= 0 needed, got "
                                 f"{self.extra_levels}, {self.extra_width}, {self.head_width}")
        if self.negatives_per_positive < 0 or self.min_negatives < 0:
            raise SsdConfigError("negatives_per_positive and min_negatives must be >= 0")
        if min(self.box_loss_weight, self.class_loss_weight) < 0:
            raise SsdConfigError("loss weights must be >= 0")

    @property
    def strides(self) -> tuple[int, ...]:
        return BACKBONE_STRIDES + tuple(32 * 2 ** (k + 1) for k in range(self.extra_levels))

    def anchors(self, image_size: int) -> AnchorGenerator:
        """The default-box generator for square `image_size` inputs."""
        sizes = linear_anchor_sizes(image_size, len(self.strides), self.min_scale, self.max_scale)
        return AnchorGenerator(strides=self.strides, sizes=sizes, scales=self.anchor_scales,
                               aspect_ratios=self.aspect_ratios)


def _conv_bn_relu(x, filters: int, kernel_size: int, strides: int, name: str, init: str):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=init, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _extra_levels(p5, config: SsdHeadConfig) -> list:
    levels, x = [], p5
    for index in range(config.extra_levels):
        name = f"extra_P{6 + index}"
        x = _conv_bn_relu(x, max(config.extra_width // 2, 1), 1, 1, f"{name}_reduce", config.init)
        x = _conv_bn_relu(x, config.extra_width, 3, 2, f"{name}_down", config.init)
        levels.append(x)
    return levels


def _level_predictions(feature, level: str, per_cell: int, num_outputs: int, config: SsdHeadConfig):
    """`[B, h, w, c]` -> box deltas `[B, h*w*K, 4]` and class logits `[B, h*w*K, C + 1]`."""
    if config.head_width:
        feature = _conv_bn_relu(feature, config.head_width, 3, 1, f"head_{level}_shared", config.init)
    box = keras.layers.Conv2D(per_cell * 4, 3, padding="same", name=f"head_{level}_box_pred",
                              kernel_initializer=config.init, dtype=HEAD_OUTPUT_DTYPE)(feature)
    # Background starts at BACKGROUND_PRIOR, the classes share the rest: early losses stay
    # small instead of every default box shouting "object".
    background_bias = math.log(BACKGROUND_PRIOR * (num_outputs - 1) / (1.0 - BACKGROUND_PRIOR))
    bias = [background_bias if k % num_outputs == SSD_BACKGROUND else 0.0 for k in range(per_cell * num_outputs)]
    cls = keras.layers.Conv2D(per_cell * num_outputs, 3, padding="same", name=f"head_{level}_class_pred",
                              kernel_initializer=config.init, dtype=HEAD_OUTPUT_DTYPE,
                              bias_initializer=keras.initializers.Constant(bias))(feature)
    box = keras.layers.Reshape((-1, 4), name=f"head_{level}_box_flat", dtype=HEAD_OUTPUT_DTYPE)(box)
    cls = keras.layers.Reshape((-1, num_outputs), name=f"head_{level}_class_flat", dtype=HEAD_OUTPUT_DTYPE)(cls)
    return box, cls


def build_ssd_network(feature_shapes: dict, num_classes: int, config: SsdHeadConfig = SsdHeadConfig(),
                      name: str = "ssd_network") -> keras.Model:
    """Extra levels + predictors: `{"P3", "P4", "P5"}` features -> raw predictions (module docstring)."""
    if int(num_classes) < 1:
        raise SsdConfigError(f"num_classes must be >= 1, got {num_classes}")
    missing = [level for level in FEATURE_LEVELS if level not in feature_shapes]
    if missing:
        raise SsdConfigError(f"SSD needs backbone features {FEATURE_LEVELS}; missing {missing}")
    inputs = {level: keras.Input(shape=tuple(int(d) for d in feature_shapes[level]), name=level)
              for level in FEATURE_LEVELS}
    features = [inputs[level] for level in FEATURE_LEVELS] + _extra_levels(inputs["P5"], config)
    # P3 is exactly 1/8 of the input (backbone contract), so this is the image side.
    per_cell = config.anchors(int(feature_shapes["P3"][0]) * BACKBONE_STRIDES[0]).anchors_per_location
    boxes, classes = [], []
    for index, feature in enumerate(features):
        box, cls = _level_predictions(feature, f"P{3 + index}", per_cell, int(num_classes) + 1, config)
        boxes.append(box)
        classes.append(cls)
    outputs = {"box_deltas": keras.layers.Concatenate(axis=1, name="box_deltas", dtype=HEAD_OUTPUT_DTYPE)(boxes),
               "class_logits": keras.layers.Concatenate(axis=1, name="class_logits",
                                                        dtype=HEAD_OUTPUT_DTYPE)(classes)}
    return keras.Model(inputs, outputs, name=name)
