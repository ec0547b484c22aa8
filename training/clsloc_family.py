"""The classification + localization family for the trainer (one class and box per image).

The model parts are `models.classification_localization`; the metrics are
`evaluation.localization_metrics`. The task model owns its multitask loss, so it is
compiled with an optimizer only; stage 1 wraps the head in the same task model with no
backbone, so both stages report the same losses and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from detseg.core.contract import CLASSIFICATION_LOCALIZATION
from detseg.data.coco import LabelMap
from detseg.evaluation.localization_metrics import ClassificationLocalizationMetrics
from detseg.models.clsloc.classification_localization import (FEATURE_LEVEL, ClassificationLocalizationModel,
                                                              build_clsloc_head)
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER
from detseg.training.model_family import ModelFamily


@dataclass(frozen=True)
class ClsLocHeadConfig:
    """`model.head` of the clsloc family (see `build_clsloc_head` and the task model)."""

    hidden_units: int = 256
    box_channels: int = 32
    dropout: float = 0.2
    box_pooling: Literal["flatten", "average"] = "flatten"
    class_pooling: Literal["average", "max"] = "average"
    box_loss: Literal["smooth_l1", "giou"] = "smooth_l1"
    class_loss_weight: float = 1.0
    box_loss_weight: float = 1.0
    smooth_l1_delta: float = 0.1
    init: Literal["he_normal", "glorot_uniform"] = DEFAULT_HEAD_INITIALIZER  # head layers' kernels


def build_head(feature_shapes: dict[str, tuple], num_classes: int, head: ClsLocHeadConfig):
    return build_clsloc_head(feature_shapes[FEATURE_LEVEL], num_classes, hidden_units=head.hidden_units,
                             box_channels=head.box_channels, dropout=head.dropout,
                             box_pooling=head.box_pooling, class_pooling=head.class_pooling, init=head.init)


def build_model(backbone, head_model, head: ClsLocHeadConfig, image_size: int):
    """The task model; `backbone=None` takes P5 features (stage 1) in the `image_size` frame."""
    return ClassificationLocalizationModel(
        backbone, head_model, image_size=(image_size, image_size), box_loss=head.box_loss,
        class_loss_weight=head.class_loss_weight, box_loss_weight=head.box_loss_weight,
        smooth_l1_delta=head.smooth_l1_delta)


def compile_kwargs(head: ClsLocHeadConfig) -> dict:
    return {}  # the task model computes its own loss and metrics


def evaluate(model, eval_batches, label_map: LabelMap, dataset=None) -> dict[str, Any]:
    """Accuracy, mean IoU and localization accuracy over `(x, y, meta)` eval batches.

    `dataset` is unused: the batches carry the targets.

    Padding examples of the last batch (`meta["valid"]` False) are left out.
    """
    metrics = ClassificationLocalizationMetrics(label_map.num_classes, list(label_map.names))
    predict = tf.function(lambda x: model(x, training=False))
    for x, y, meta in eval_batches:
        outputs = predict(x)
        valid = meta["valid"].numpy()
        metrics.update(np.asarray(y["class"])[valid], np.asarray(y["box"])[valid],
                       outputs["class_probabilities"].numpy()[valid], outputs["box"].numpy()[valid])
    return metrics.result()


CLSLOC_FAMILY = ModelFamily(
    task=CLASSIFICATION_LOCALIZATION,
    head_config=ClsLocHeadConfig,
    bottleneck_levels=(FEATURE_LEVEL,),
    build_head=build_head,
    build_model=build_model,
    compile_kwargs=compile_kwargs,
    evaluate=evaluate,
    headline_metric="localization_accuracy",
)
