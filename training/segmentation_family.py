"""The semantic segmentation families for the trainer: FCN (32s/16s/8s) and U-Net.

Both train on the pipelines' `semantic` batches (`y` uint8 `[B, S, S]`: 0 background,
`i + 1` class `i`, 255 ignore) with `models.segmentation_losses.SegmentationLoss`
(cross-entropy + Dice, 255 ignored). The model has `C + 1` output channels (background
first). Stage 1 trains the head (`models.fcn.build_fcn_head` or
`models.unet.build_unet_decoder`) alone on cached backbone features; stage 2 wraps the
same head and the backbone in a `models.semantic_segmenter.SemanticSegmenter`, whose
`predict_step` gives the class map that `detseg evaluate` and the exports read.

U-Net reads P3..P5 here, because stage 1 caches only what `build_backbone` returns: its
decoder climbs from stride 32 to stride 8 and a fixed bilinear x8 finishes. The full
U-Net with stride-2/4 skips (`models.unet.build_backbone_encoder`) needs the trainer to
extract features through that encoder (a trainer hook would then cache "P1".."P5").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from detseg.core.contract import BACKGROUND_NAME, FEATURE_LEVELS, FEATURE_STRIDES, SEMANTIC, SEMANTIC_IGNORE
from detseg.data.coco import LabelMap
from detseg.evaluation.semantic_metrics import SemanticSegmentationMetrics
from detseg.models.segmentation.fcn import build_fcn_head
from detseg.models.segmentation.losses import SegmentationLoss
from detseg.models.segmentation.semantic_segmenter import SemanticSegmenter
from detseg.models.segmentation.unet import build_unet_decoder
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER
from detseg.training.model_family import ModelFamily


@dataclass(frozen=True)
class FCNHeadConfig:
    """`model.head` of the fcn family (see `models.fcn.FCN`) and its loss."""

    variant: Literal["fcn32s", "fcn16s", "fcn8s"] = "fcn8s"
    head_filters: int = 128
    dropout: float = 0.1
    learn_final_upsampling: bool = False
    init: Literal["he_normal", "glorot_uniform"] = DEFAULT_HEAD_INITIALIZER  # the P5 convs' kernels
    cross_entropy_weight: float = 1.0
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None  # C + 1 weights, background first


@dataclass(frozen=True)
class UNetHeadConfig:
    """`model.head` of the unet family (see `models.unet.build_unet_decoder`) and its loss."""

    decoder_filters: tuple[int, ...] = (64, 32)
    upsampling: Literal["bilinear", "nearest", "transpose"] = "bilinear"
    init: Literal["he_normal", "glorot_uniform"] = DEFAULT_HEAD_INITIALIZER  # the decoder convs' kernels
    cross_entropy_weight: float = 1.0
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None  # C + 1 weights, background first


def _feature_inputs(feature_shapes: dict[str, tuple]) -> dict[str, keras.KerasTensor]:
    return {level: keras.Input(tuple(shape), name=level) for level, shape in feature_shapes.items()}


def _image_size(feature_shapes: dict[str, tuple]) -> int:
    """The input size implied by P5 (stride 32), the coarsest level every family reads."""
    return int(feature_shapes["P5"][0]) * FEATURE_STRIDES["P5"]


def build_fcn_family_head(feature_shapes: dict[str, tuple], num_classes: int, head: FCNHeadConfig):
    """`{level: [h, w, c]}` -> FCN head, features -> logits with `num_classes + 1` channels."""
    return build_fcn_head(_feature_inputs(feature_shapes), num_classes + 1, head.variant, head.head_filters, head.dropout,
                          head.learn_final_upsampling, head.init)


def build_unet_family_head(feature_shapes: dict[str, tuple], num_classes: int, head: UNetHeadConfig):
    """`{level: [h, w, c]}` -> U-Net decoder, features -> logits with `num_classes + 1` channels."""
    return build_unet_decoder(_feature_inputs(feature_shapes), _image_size(feature_shapes),
                              num_classes + 1, head.decoder_filters, head.upsampling, head.init)


def build_model(backbone, head_model: keras.Model, head, image_size: int) -> keras.Model:
    """Stage 1 (`backbone=None`): the head itself, features -> logits. Stage 2: backbone + head."""
    if backbone is None:
        return head_model
    return SemanticSegmenter(encoder=backbone, head=head_model,
                             num_classes=int(head_model.output.shape[-1]), name="segmenter")


def compile_kwargs(head) -> dict:
    return {"loss": SegmentationLoss(head.cross_entropy_weight, head.dice_weight,
                                     list(head.class_weights) if head.class_weights else None)}


def evaluate(model: keras.Model, eval_batches, label_map: LabelMap, dataset=None) -> dict[str, Any]:
    """mIoU, per-class IoU / Dice, pixel accuracy and the confusion matrix, in the letterbox frame.

    `dataset` is unused: the batches carry the targets.

    Over `(x, y, meta)` eval batches; padding examples (`meta["valid"]` False) and
    ignored pixels (`SEMANTIC_IGNORE`, e.g. letterbox borders) are left out. Class 0 is background.
    """
    names = [BACKGROUND_NAME, *label_map.names]
    metrics = SemanticSegmentationMetrics(len(names), names, ignore_label=SEMANTIC_IGNORE)
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32))
    for x, y, meta in eval_batches:
        valid = meta["valid"].numpy()
        metrics.update(np.asarray(y)[valid], predict(x).numpy()[valid])
    return metrics.result()


FCN_FAMILY = ModelFamily(
    task=SEMANTIC,
    head_config=FCNHeadConfig,
    bottleneck_levels=FEATURE_LEVELS,
    build_head=build_fcn_family_head,
    build_model=build_model,
    compile_kwargs=compile_kwargs,
    evaluate=evaluate,
    headline_metric="mean_iou",
)

UNET_FAMILY = ModelFamily(
    task=SEMANTIC,
    head_config=UNetHeadConfig,
    bottleneck_levels=FEATURE_LEVELS,
    build_head=build_unet_family_head,
    build_model=build_model,
    compile_kwargs=compile_kwargs,
    evaluate=evaluate,
    headline_metric="mean_iou",
)
