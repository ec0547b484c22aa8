"""`SsdDetector`: backbone -> extra levels -> default-box predictors, with its loss and decoder.

    model = build_ssd_detector(build_backbone("tiny", (128, 128)), num_classes=3)
    model.compile(optimizer="adam")          # the model owns its loss
    model.fit(batches)                       # (x, y) of the batch contract
    detections = model.predict(images)       # decoded + NMS

- input: raw pixels float32 `[B, H, W, 3]` in 0..255, H == W (default boxes are laid
  out for square inputs: the pipelines letterbox to a square). With `backbone=None`
  (stage 1 of transfer learning) the input is the features `{"P3", "P4", "P5"}` and
  `image_size` names the frame.
- `call` -> raw `{"box_deltas": [B, A, 4], "class_logits": [B, A, C + 1]}` (`models.ssd_head`).
- `compute_loss(x, y, y_pred)`: `y = {"boxes": float32 [B, N, 4] xyxy px, "classes":
  int32 [B, N]}` padded with -1; IoU matching, smooth L1 + cross-entropy with hard
  negative mining (`models.ssd_loss`). Reported as `loss`, `box_loss`, `class_loss`.
- `detect(images)` / `predict`: `{"boxes": float32 [B, K, 4] xyxy px of the INPUT frame,
  "scores": [B, K], "classes": int32 [B, K] (-1 on padding), "num_detections": int32 [B]}`
  after class-aware NMS; the class scores are the softmax without the background column.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from detseg.models.ops.box_coding import decode_center_size
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.matching import IouMatcher
from detseg.models.ops.nms import NmsConfig, batched_nms
from detseg.models.ssd.head import BACKBONE_LEVELS, SSD_BACKGROUND, SsdConfigError, SsdHeadConfig, build_ssd_network
from detseg.models.ssd.loss import ssd_losses, ssd_targets


def ssd_config_from(value) -> SsdHeadConfig:
    """An `SsdHeadConfig` from itself, a dict (e.g. `get_config` output) or None (defaults)."""
    if value is None:
        return SsdHeadConfig()
    if isinstance(value, SsdHeadConfig):
        return value
    return SsdHeadConfig(**{key: tuple(item) if isinstance(item, list) else item
                            for key, item in dict(value).items()})


def _square_image_size(backbone, image_size) -> int:
    if backbone is not None:
        size = tuple(int(side) for side in backbone.input_shape[1:3])
        if image_size is not None and tuple(int(s) for s in image_size) != size:
            raise SsdConfigError(f"image_size {tuple(image_size)} differs from the backbone's input {size}")
    elif image_size is None:
        raise SsdConfigError("image_size (H, W) is required without a backbone: default boxes depend on it")
    else:
        size = tuple(int(side) for side in image_size)
    if size[0] != size[1]:
        raise SsdConfigError(f"SSD takes square inputs (letterboxed), got {size}")
    return size[0]


@keras.saving.register_keras_serializable(package="detseg")
class SsdDetector(keras.Model):
    """The SSD task model (module docstring).

    Args:
        backbone: a `models.backbones.build_backbone` model, or None (features in).
        network: `models.ssd_head.build_ssd_network(...)` for the backbone's features.
        config: `SsdHeadConfig` (or its dict) the network was built with.
        image_size: `(S, S)`; taken from the backbone when there is one.
    """

    def __init__(self, backbone, network, config=None, image_size=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.network = network
        self.config = ssd_config_from(config)
        side = _square_image_size(backbone, image_size)
        self.image_size = (side, side)
        self._anchors = self.config.anchors(side)(self.image_size)
        predicted = int(network.output["class_logits"].shape[1])
        if predicted != len(self._anchors):
            raise SsdConfigError(f"network '{network.name}' predicts {predicted} boxes but the config "
                                 f"lays out {len(self._anchors)} default boxes for {self.image_size}")
        self.matcher = IouMatcher(self.config.positive_iou, self.config.negative_iou, force_best_anchor=True)
        self.nms_config = NmsConfig(self.config.iou_threshold, self.config.score_threshold,
                                    self.config.max_detections)
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.built = True  # the sub-models hold every variable

    @property
    def num_classes(self) -> int:
        return int(self.network.output["class_logits"].shape[-1]) - 1

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class index -> name: `config.class_names`, or `class_<i>` when none were given."""
        names = tuple(self.config.class_names)
        return names if names else tuple(f"class_{i}" for i in range(self.num_classes))

    @property
    def anchors(self):
        """float32 `[A, 4]` xyxy px default boxes, in the network's output order."""
        return self._anchors

    def compile(self, optimizer="rmsprop", jit_compile=False, **kwargs):
        # XLA is off by default: slower on CPU here, and NMS in predict cannot compile.
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def call(self, inputs, training=False):
        features = inputs
        if self.backbone is not None:
            features = self.backbone(inputs, training=training)
        return self.network({level: features[level] for level in BACKBONE_LEVELS}, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`box_loss_weight * smooth L1 + class_loss_weight * CE` (per-image sample weights are not supported)."""
        config = self.config
        targets = ssd_targets(tf.constant(self._anchors), y["boxes"], y["classes"], self.matcher, config.variances)
        losses = ssd_losses(y_pred, targets, config.negatives_per_positive, config.min_negatives)
        self.box_loss_tracker.update_state(losses["box"])
        self.class_loss_tracker.update_state(losses["class"])
        total = config.box_loss_weight * losses["box"] + config.class_loss_weight * losses["class"]
        total = total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, total.dtype)
        for extra in self.losses:
            total = total + tf.cast(tf.reduce_sum(extra), total.dtype)
        return total

    def decode(self, raw) -> dict[str, tf.Tensor]:
        """Raw outputs -> padded detections after NMS (module docstring)."""
        boxes = decode_center_size(raw["box_deltas"], tf.constant(self._anchors), self.config.variances)
        boxes = clip_boxes(boxes, self.image_size)
        probabilities = tf.nn.softmax(tf.cast(raw["class_logits"], tf.float32), axis=-1)
        scores = probabilities[..., SSD_BACKGROUND + 1:]
        return batched_nms(boxes, scores, self.nms_config)

    def detect(self, images) -> dict[str, tf.Tensor]:
        """Pixels (or features without a backbone) -> detections in the input frame."""
        return self.decode(self(images, training=False))

    def predict_step(self, data):
        return self.detect(data[0] if isinstance(data, (tuple, list)) else data)

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": None if self.backbone is None else keras.saving.serialize_keras_object(self.backbone),
            "network": keras.saving.serialize_keras_object(self.network),
            "config": dataclasses.asdict(self.config),
            "image_size": list(self.image_size),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("backbone", "network"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)


def build_ssd_detector(backbone: keras.Model, num_classes: int, config=None) -> SsdDetector:
    """An `SsdDetector` with a fresh network sized for `backbone`'s P3..P5 features."""
    config = ssd_config_from(config)
    shapes = {level: tuple(int(d) for d in backbone.output[level].shape[1:]) for level in BACKBONE_LEVELS}
    return SsdDetector(backbone, build_ssd_network(shapes, num_classes, config), config)
