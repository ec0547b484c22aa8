"""`DenseDetector`: what the one-stage detectors (YOLO, SSD) share, on top of `TaskModel`.

A dense detector is `backbone -> network -> one prediction per prior` (grid point or
default box), decoded and put through class-aware NMS for prediction:

    images float32 [B, H, W, 3] 0..255 -> backbone {"P3", "P4", "P5"}
      -> network (neck + head, one functional model) -> raw outputs per prior  (`call`)
      -> `decode(raw)`: boxes in the input frame, scores, NMS -> padded detections

Why a base class of its own rather than more of `TaskModel`: the two-stage models
(`rcnn.FasterRCNN`) and the segmenters have neither a single `network` nor a head config
dataclass nor decode-after-call prediction (R-CNN predicts through a different proposal
path than it trains), so this plumbing would be dead weight there; YOLO and SSD had it
twice, line for line. Why here and not in `models/ops/`: `ops` holds tensor functions
(box coding, NMS, matching) with no model state; this is a Keras model.

A subclass gives:
- `config_class`: its head-config dataclass, a `DenseHeadConfig` (NMS options, class names)
  with one `<name>_loss_weight` per entry of `loss_names` (the network, loss, assigner and
  NMS read it).
- `loss_names`: the losses it logs (`<name>_loss` metrics) and weights.
- `resolve_image_size(backbone, image_size)`, when it constrains the frame (SSD: square).
- `check_network()`: the network's prior count against the frame's.
- `losses_of(y, y_pred)`: `{name: scalar loss}` for `loss_names`.
- `decode(raw)`: raw outputs -> the padded detection dict (`ops.nms.batched_nms`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras
import tensorflow as tf

from detseg.core.contract import FEATURE_LEVELS
from detseg.models.ops.nms import NmsConfig
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER, TaskModel


class DenseDetectorError(ValueError):
    """The backbone, network, image size and config of a dense detector do not fit."""


@dataclasses.dataclass(frozen=True)
class DenseHeadConfig:
    """What every dense detector's head config has: post-processing and class names.

    `score_threshold`, `iou_threshold`, `max_detections`: class-aware NMS
    (`ops.nms.NmsConfig`). `class_names`: index -> name (empty: "class_<i>"). `init`: the
    kernel initializer of the head's convolutions (`task_model.HEAD_INITIALIZERS`).
    Subclasses (`YoloHeadConfig`, `SsdHeadConfig`) add architecture, targets and loss weights.
    """

    score_threshold: float = 0.01
    iou_threshold: float = 0.6
    max_detections: int = 100
    class_names: tuple[str, ...] = ()
    init: Literal["he_normal", "glorot_uniform"] = DEFAULT_HEAD_INITIALIZER


def config_from(config_class, value):
    """A `config_class` dataclass from itself, a dict (e.g. `get_config` output) or None (defaults)."""
    if value is None:
        return config_class()
    if isinstance(value, config_class):
        return value
    return config_class(**{key: tuple(item) if isinstance(item, list) else item
                           for key, item in dict(value).items()})


def backbone_image_size(backbone, image_size, error=DenseDetectorError) -> tuple[int, int]:
    """`(H, W)` of the frame: the backbone's input size, or `image_size` without a backbone."""
    if backbone is None:
        if image_size is None:
            raise error("image_size (H, W) is required without a backbone: the priors depend on it")
        return tuple(int(side) for side in image_size)
    size = tuple(int(side) for side in backbone.input_shape[1:3])
    if image_size is not None and tuple(int(s) for s in image_size) != size:
        raise error(f"image_size {tuple(image_size)} differs from the backbone's input {size}")
    return size


def feature_shapes(backbone: keras.Model) -> dict[str, tuple[int, ...]]:
    """`{level: (h, w, c)}` of a backbone's `FEATURE_LEVELS`: what a network is built for."""
    return {level: tuple(int(d) for d in backbone.output[level].shape[1:]) for level in FEATURE_LEVELS}


class DenseDetector(TaskModel):
    """Backbone (optional) + network + decoder (module docstring).

    Args:
        backbone: a `models.backbones.build_backbone` model, or None (features in: stage 1
            of transfer learning, then `image_size` names the frame).
        network: functional model, features `{"P3", "P4", "P5"}` -> raw outputs per prior.
        config: a `config_class` instance (or its dict) the network was built with.
        image_size: `(H, W)`; taken from the backbone when there is one.
    """

    config_class: type = type(None)
    loss_names: tuple[str, ...] = ()
    nested_model_keys = ("backbone", "network")

    def __init__(self, backbone, network, config=None, image_size=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.network = network
        self.config = config_from(self.config_class, config)
        self.image_size = self.resolve_image_size(backbone, image_size)
        self.check_network()
        self.nms_config = NmsConfig(self.config.iou_threshold, self.config.score_threshold,
                                    self.config.max_detections)
        for name in self.loss_names:  # box_loss_tracker, ...: attribute names kept for saved models
            setattr(self, f"{name}_loss_tracker", keras.metrics.Mean(name=f"{name}_loss"))
        self.built = True  # the sub-models hold every variable

    # ------------------------------------------------------------------ subclass hooks

    def resolve_image_size(self, backbone, image_size) -> tuple[int, int]:
        return backbone_image_size(backbone, image_size)

    def check_network(self) -> None:
        """Raise if the network's outputs do not fit the frame's priors."""

    def losses_of(self, y, y_pred) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def decode(self, raw) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ the shared shape

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class index -> name: `config.class_names`, or `class_<i>` when none were given."""
        names = tuple(self.config.class_names)
        return names if names else tuple(f"class_{i}" for i in range(self.num_classes))

    def call(self, inputs, training=False):
        features = inputs
        if self.backbone is not None:
            features = self.backbone(inputs, training=training)
        return self.network({level: features[level] for level in FEATURE_LEVELS}, training=training)

    def task_loss(self, x, y, y_pred, sample_weight=None, training=True):
        """Sum of `config.<name>_loss_weight * <name> loss` (per-image sample weights are not supported)."""
        losses = self.losses_of(y, y_pred)
        total = 0.0
        for name in self.loss_names:
            getattr(self, f"{name}_loss_tracker").update_state(losses[name])
            total = total + getattr(self.config, f"{name}_loss_weight") * losses[name]
        return total

    def detect(self, images) -> dict[str, tf.Tensor]:
        """Pixels (or features without a backbone) -> detections in the input frame."""
        return self.decode(self(images, training=False))

    def predict_outputs(self, images) -> dict[str, tf.Tensor]:
        return self.detect(images)

    def get_config(self):
        config = super().get_config()
        config.update({"config": dataclasses.asdict(self.config), "image_size": list(self.image_size)})
        return config
