"""`YoloDetector`: backbone -> PAN-FPN neck -> anchor-free head, with its loss and decoder.

    model = YoloDetector(build_backbone("tiny", (128, 128)),
                         build_yolo_network(shapes, num_classes=3, config=config), config)
    model.compile(optimizer="adam")          # the model owns its loss
    model.fit(batches)                       # (x, y) of the batch contract
    detections = model.predict(images)       # decoded + NMS

- input: raw pixels float32 `[B, H, W, 3]` in 0..255 (normalization is in the backbone).
  With `backbone=None` (stage 1 of transfer learning) the input is the backbone's
  features `{"P3", "P4", "P5"}` and `image_size` names the frame.
- `call` -> raw `{"box_distribution": [B, A, 4 * reg_max], "class_logits": [B, A, C]}`.
- `compute_loss(x, y, y_pred)`: `y = {"boxes": float32 [B, N, 4] xyxy px,
  "classes": int32 [B, N]}` padded with -1 (the batch contract); task-aligned
  assignment, then `box_loss_weight * GIoU + class_loss_weight * BCE + dfl_loss_weight *
  DFL` (`models.yolo_loss`). Reported as `loss`, `box_loss`, `class_loss`, `dfl_loss`.
- `detect(images)` / `predict`: `{"boxes": float32 [B, K, 4] xyxy px of the INPUT frame,
  "scores": [B, K], "classes": int32 [B, K] (-1 on padding), "num_detections": int32 [B]}`
  after class-aware NMS (`models.nms`). Undoing the letterbox is the caller's job
  (pipelines / serving know the transform); `detect` is a plain graph function, ready for
  `serving.ServingModule(infer=model.detect, trackables=[model], ...)`.

Why anchor-free with task-aligned assignment rather than YOLOv3's anchors: no anchor
shapes to tune per dataset, one prior per cell (3-9x fewer outputs to decode and NMS),
and the assigner picks positives by predicted quality, which ranks boxes better for COCO
mAP at strict IoU thresholds (YOLOv8, TOOD).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from detseg.models.ops.anchors import grid_points
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.nms import NmsConfig, batched_nms
from detseg.models.yolo.assigner import task_aligned_assign
from detseg.models.yolo.head import YOLO_STRIDES, YoloConfigError, YoloHeadConfig
from detseg.models.yolo.loss import decode_yolo_boxes, yolo_losses
from detseg.models.necks.pan_fpn import LEVELS


def head_config_from(value) -> YoloHeadConfig:
    """A `YoloHeadConfig` from itself, a dict (e.g. `get_config` output) or None (defaults)."""
    if value is None:
        return YoloHeadConfig()
    if isinstance(value, YoloHeadConfig):
        return value
    return YoloHeadConfig(**{key: tuple(item) if isinstance(item, list) else item
                             for key, item in dict(value).items()})


def _image_size_of(backbone, image_size) -> tuple[int, int]:
    if backbone is None:
        if image_size is None:
            raise YoloConfigError("image_size (H, W) is required without a backbone: the grid depends on it")
        return tuple(int(side) for side in image_size)
    size = tuple(int(side) for side in backbone.input_shape[1:3])
    if image_size is not None and tuple(int(s) for s in image_size) != size:
        raise YoloConfigError(f"image_size {tuple(image_size)} differs from the backbone's input {size}")
    return size


def _images_of(data):
    """`predict_step` data -> the images: `x`, `(x,)`, `(x, y)` or `(x, y, w)`."""
    return data[0] if isinstance(data, (tuple, list)) else data


@keras.saving.register_keras_serializable(package="detseg")
class YoloDetector(keras.Model):
    """The YOLO task model (module docstring).

    Args:
        backbone: a `models.backbones.build_backbone` model, or None (features in).
        network: `models.yolo_head.build_yolo_network(...)` for the backbone's features.
        config: `YoloHeadConfig` (or its dict) the network was built with; the loss, the
            assigner and NMS read it too.
        image_size: `(H, W)`; taken from the backbone when there is one.
    """

    def __init__(self, backbone, network, config=None, image_size=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.network = network
        self.config = head_config_from(config)
        self.image_size = _image_size_of(backbone, image_size)
        points, strides = grid_points(self.image_size, YOLO_STRIDES)
        expected = int(network.output["class_logits"].shape[1])
        if expected != len(points):
            raise YoloConfigError(f"network '{network.name}' predicts {expected} points but a "
                                  f"{self.image_size} image has {len(points)} grid points")
        self._points, self._strides = points, strides
        self.nms_config = NmsConfig(self.config.iou_threshold, self.config.score_threshold,
                                    self.config.max_detections)
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.dfl_loss_tracker = keras.metrics.Mean(name="dfl_loss")
        self.built = True  # the sub-models hold every variable

    @property
    def num_classes(self) -> int:
        return int(self.network.output["class_logits"].shape[-1])

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class index -> name: `config.class_names`, or `class_<i>` when none were given."""
        names = tuple(self.config.class_names)
        return names if names else tuple(f"class_{i}" for i in range(self.num_classes))

    def compile(self, optimizer="rmsprop", jit_compile=False, **kwargs):
        # XLA is off by default: slower on CPU here, and NMS in predict cannot compile.
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def call(self, inputs, training=False):
        features = inputs
        if self.backbone is not None:
            features = self.backbone(inputs, training=training)
        return self.network({level: features[level] for level in LEVELS}, training=training)

    def _priors(self):
        return tf.constant(self._points), tf.constant(self._strides)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted sum of the box, class and DFL losses (per-image sample weights are not supported)."""
        points, strides = self._priors()
        config = self.config
        pred_boxes = decode_yolo_boxes(y_pred["box_distribution"], points, strides, config.reg_max)
        targets = task_aligned_assign(tf.sigmoid(tf.cast(y_pred["class_logits"], tf.float32)), pred_boxes,
                                      points, y["boxes"], y["classes"], config.assign_topk,
                                      config.assign_alpha, config.assign_beta)
        losses = yolo_losses(y_pred, pred_boxes, targets, points, strides, config.reg_max)
        self.box_loss_tracker.update_state(losses["box"])
        self.class_loss_tracker.update_state(losses["class"])
        self.dfl_loss_tracker.update_state(losses["dfl"])
        total = (config.box_loss_weight * losses["box"] + config.class_loss_weight * losses["class"]
                 + config.dfl_loss_weight * losses["dfl"])
        # Under tf.distribute each replica returns its share; Keras sums the gradients.
        total = total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, total.dtype)
        for extra in self.losses:  # weight regularizers, if any
            total = total + tf.cast(tf.reduce_sum(extra), total.dtype)
        return total

    def decode(self, raw) -> dict[str, tf.Tensor]:
        """Raw outputs -> padded detections after NMS (module docstring)."""
        points, strides = self._priors()
        boxes = decode_yolo_boxes(raw["box_distribution"], points, strides, self.config.reg_max)
        boxes = clip_boxes(boxes, self.image_size)
        scores = tf.sigmoid(tf.cast(raw["class_logits"], tf.float32))
        return batched_nms(boxes, scores, self.nms_config)

    def detect(self, images) -> dict[str, tf.Tensor]:
        """Pixels (or features without a backbone) -> detections in the input frame."""
        return self.decode(self(images, training=False))

    def predict_step(self, data):
        return self.detect(_images_of(data))

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


def build_yolo_detector(backbone: keras.Model, num_classes: int, config=None) -> YoloDetector:
    """A `YoloDetector` with a fresh network sized for `backbone`'s P3..P5 features."""
    from detseg.models.yolo.head import build_yolo_network

    config = head_config_from(config)
    shapes = {level: tuple(int(d) for d in backbone.output[level].shape[1:]) for level in LEVELS}
    return YoloDetector(backbone, build_yolo_network(shapes, num_classes, config), config)
