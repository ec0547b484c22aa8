"""`FasterRCNN`: backbone -> FPN -> RPN -> RoIAlign -> box head -> class-aware NMS.

    images float32 [B, H, W, 3] 0..255 (raw pixels; normalization is in the backbone)
      -> backbone {"P3", "P4", "P5"} -> FeaturePyramid (same width on every level)
      -> RPNHead: objectness [B, A] + deltas [B, A, 4] for the anchors (models.anchors)
      -> proposals [B, P, 4] (models.rpn_proposals: decode, clip, top-k, NMS per level)
      -> RoIAlign 7x7 per proposal (models.roi_align, FPN level assignment)
      -> BoxHead: class logits [B, P, C + 1] (background last), deltas [B, P, C, 4]
      -> detections (models.faster_rcnn_detections)

`model(images)` returns the raw outputs the losses read (`raw_outputs`: FPN features, RPN
objectness and deltas, proposals), in training and inference alike (`models.TaskModel`).
Prediction (`predict` / `predict_step` / `detect`): `{"boxes" f32 [B, K, 4] xyxy px of the
input frame, "scores" f32 [B, K], "classes" int32 [B, K] (-1 on padding rows),
"num_detections" int32 [B]}`, K = `options.nms.max_detections`; it takes the test-time
proposal settings (`options.test_proposals`), so it is its own path, not a decoding of
`call`'s outputs.

Training (`fit` in graph mode; compile with an optimizer only): the model owns its four
losses (`models.faster_rcnn_losses`), computed from targets in the batch contract
`{"boxes" f32 [B, N, 4] xyxy px, "classes" int32 [B, N] padded with -1}`: RPN targets by
IoU matching and balanced sampling (`models.rpn_targets`), RoIs sampled from proposals
plus ground truth (`models.roi_sampling`). Each loss is logged as a metric
(`rpn_objectness_loss`, `rpn_box_loss`, `roi_class_loss`, `roi_box_loss`); `loss` is
their weighted sum (`options.loss_weights`).

With `backbone=None` the model's input is the feature dict (e.g. cached bottleneck
features, stage 1 of transfer learning) and `image_size` gives the frame; the same
layers then go into a model with a backbone (`with_backbone`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER, TaskModel

from detseg.core.contract import FEATURE_LEVELS
from detseg.models.ops.anchors import AnchorGenerator, level_shapes
from detseg.models.rcnn.box_head import BoxHead
from detseg.models.rcnn.detections import detect_objects
from detseg.models.rcnn.losses import rpn_box_loss, rpn_objectness_loss, roi_box_loss, roi_class_loss
from detseg.models.necks.fpn import FeaturePyramid
from detseg.models.rcnn.options import TwoStageConfigError, TwoStageOptions
from detseg.models.ops.matching import valid_ground_truth
from detseg.models.ops.roi_align import level_number, roi_align
from detseg.models.ops.roi_sampling import sample_rois
from detseg.models.rcnn.rpn_head import RPNHead
from detseg.models.rcnn.rpn_proposals import generate_proposals
from detseg.models.rcnn.rpn_targets import rpn_targets

FASTER_RCNN_LOSSES = ("rpn_objectness", "rpn_box", "roi_class", "roi_box")


@keras.saving.register_keras_serializable(package="detseg")
class FasterRCNN(TaskModel):
    """Two-stage detector (module docstring). Build one with `build_faster_rcnn`.

    Args:
        backbone: `images -> {"P3", ...}` functional model, or None (inputs are features).
        neck, rpn_head, box_head: the trainable parts (shared between models as layers).
        image_size: `(H, W)`; required without a backbone, else taken from it.
        options: `TwoStageOptions` (or its dict).
    """

    loss_names = FASTER_RCNN_LOSSES
    extra_head_names: tuple[str, ...] = ()  # head layers a subclass adds (constructor arguments)
    nested_model_keys = ("backbone", "neck", "rpn_head", "box_head")

    def __init__(self, backbone, neck: FeaturePyramid, rpn_head: RPNHead, box_head: BoxHead,
                 image_size=None, options: TwoStageOptions | dict | None = None, **kwargs):
        extra_heads = {name: kwargs.pop(name) for name in self.extra_head_names}
        super().__init__(**kwargs)
        self.backbone = backbone
        self.neck, self.rpn_head, self.box_head = neck, rpn_head, box_head
        for name, layer in extra_heads.items():  # before build(): a built model is locked
            setattr(self, name, layer)
        self.options = options if isinstance(options, TwoStageOptions) else TwoStageOptions.from_dict(options)
        self.image_size = self._resolved_image_size(image_size)
        self.levels = tuple(neck.levels)
        self._check_parts()
        generator = AnchorGenerator(strides=tuple(2 ** level_number(n) for n in self.levels),
                                    sizes=self.options.anchor_sizes, scales=self.options.anchor_scales,
                                    aspect_ratios=self.options.anchor_ratios)
        self.anchors = generator(self.image_size)
        self.level_anchor_counts = [h * w * generator.anchors_per_location
                                    for h, w in level_shapes(self.image_size, generator.strides)]
        self.seed_generator = keras.random.SeedGenerator(0, name="target_sampling_seed")
        self.loss_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in self.loss_names}
        if backbone is not None:  # feature shapes are known: build now, so weights can load
            self.build(tuple(backbone.input_shape))  # also the SavedModel default signature

    @property
    def num_classes(self) -> int:
        return self.box_head.num_classes

    def _resolved_image_size(self, image_size) -> tuple[int, int]:
        if self.backbone is None:
            if image_size is None:
                raise TwoStageConfigError("image_size (H, W) is required without a backbone")
            return tuple(int(side) for side in image_size)
        size = tuple(int(side) for side in self.backbone.input_shape[1:3])
        if image_size is not None and tuple(int(s) for s in image_size) != size:
            raise TwoStageConfigError(f"image_size {tuple(image_size)} differs from the backbone's {size}")
        return size

    def _check_parts(self) -> None:
        options = self.options
        if len(options.anchor_sizes) != len(self.levels):
            raise TwoStageConfigError(f"{len(options.anchor_sizes)} anchor_sizes for levels {self.levels}: "
                                      f"give one base size per level")
        if self.rpn_head.anchors_per_cell != options.anchors_per_cell:
            raise TwoStageConfigError(
                f"RPN head predicts {self.rpn_head.anchors_per_cell} anchors per cell but the options "
                f"give {options.anchors_per_cell} (scales x ratios)")
        if tuple(self.rpn_head.levels) != self.levels:
            raise TwoStageConfigError(f"RPN head levels {self.rpn_head.levels} differ from the neck's {self.levels}")
        if self.backbone is not None:
            missing = [n for n in self.levels if n not in self.backbone.output]
            if missing:
                raise TwoStageConfigError(f"backbone '{self.backbone.name}' lacks levels {missing}")

    def build(self, input_shape=None):
        """Builds every part from the feature shapes, so weights can load before a first call."""
        if self.backbone is not None:
            shapes = {name: tuple(self.backbone.output[name].shape) for name in self.levels}
        else:
            shapes = {name: tuple(input_shape[name]) for name in self.levels}
        self.build_heads(shapes)
        self.built = True

    def build_heads(self, feature_shapes: dict) -> None:
        if not self.neck.built:
            self.neck.build(feature_shapes)
        pyramid = self.neck.compute_output_shape(feature_shapes)
        if not self.rpn_head.built:
            self.rpn_head.build(pyramid)
        channels = self.neck.channels
        size = self.options.box_roi_size
        if not self.box_head.built:
            self.box_head.build((None, None, size, size, channels))

    # ------------------------------------------------------------------ forward passes

    def pyramid(self, inputs, training=False) -> dict[str, tf.Tensor]:
        """Images (or backbone features) -> FPN features `{level: [B, h, w, channels]}`."""
        features = inputs if self.backbone is None else self.backbone(inputs, training=training)
        return self.neck({name: features[name] for name in self.levels}, training=training)

    def raw_outputs(self, inputs, training=False) -> dict:
        """What the losses need: FPN features, RPN outputs and (training) proposals."""
        features = self.pyramid(inputs, training=training)
        rpn = self.rpn_head(features, training=training)
        proposals = generate_proposals(rpn["objectness"], rpn["deltas"], self.anchors,
                                       self.level_anchor_counts, self.image_size,
                                       self.options.train_proposals)
        return {"features": features, "rpn_objectness": rpn["objectness"], "rpn_deltas": rpn["deltas"],
                "proposals": proposals["boxes"]}

    def pool(self, features, boxes, size: int):
        """RoIAlign `[B, R, 4]` boxes -> `[B, R, size, size, channels]`, float32.

        In float32 whatever the precision policy: `crop_and_resize` takes no bfloat16, and
        the heads cast their inputs to their own compute dtype.
        """
        strides = {name: 2 ** level_number(name) for name in self.levels}
        features = {name: tf.cast(features[name], tf.float32) for name in self.levels}
        return roi_align(features, boxes, size, strides, self.options.sampling_ratio,
                         self.options.canonical_size, self.options.canonical_level)

    def detect(self, inputs, training=False) -> dict[str, tf.Tensor]:
        """Images -> final detections (module docstring)."""
        features = self.pyramid(inputs, training=training)
        rpn = self.rpn_head(features, training=training)
        proposals = generate_proposals(rpn["objectness"], rpn["deltas"], self.anchors,
                                       self.level_anchor_counts, self.image_size,
                                       self.options.test_proposals)["boxes"]
        head = self.box_head(self.pool(features, proposals, self.options.box_roi_size), training=training)
        detections = detect_objects(proposals, head["class_logits"], head["box_deltas"],
                                    self.image_size, self.options.nms)
        return self.add_detection_outputs(features, detections, training)

    def add_detection_outputs(self, features, detections: dict, training=False) -> dict:
        """Hook for subclasses (Mask R-CNN adds masks); returns the detections."""
        return detections

    def call(self, inputs, training=False):
        """Raw outputs (`raw_outputs`), what the losses read; `predict_step` gives detections."""
        return self.raw_outputs(inputs, training=training)

    def predict_outputs(self, images) -> dict[str, tf.Tensor]:
        return self.detect(images, training=False)

    # ------------------------------------------------------------------ losses

    def task_loss(self, x, y, y_pred, sample_weight=None, training=True):
        """The weighted sum of the losses (logged one by one); see the module docstring."""
        if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
            raise TwoStageConfigError("targets must be a dict with 'boxes' [B, N, 4] and 'classes' [B, N]")
        gt_boxes = tf.cast(y["boxes"], tf.float32)
        gt_classes = tf.cast(y["classes"], tf.int32)
        gt_valid = valid_ground_truth(gt_classes)
        losses = self.rpn_losses(y_pred, gt_boxes, gt_valid)
        sampled = sample_rois(y_pred["proposals"], gt_boxes, gt_classes, gt_valid, self.num_classes,
                              self.options.rois_per_image, self.options.roi_positive_fraction,
                              self.options.roi_positive_iou, self.options.roi_negative_iou,
                              seed=self.seed_generator)
        losses.update(self.roi_losses(y_pred["features"], y, sampled, training))
        total = 0.0
        for name, value in losses.items():
            self.loss_trackers[name].update_state(value)
            total = total + self.options.loss_weights[name] * value
        return total

    def rpn_losses(self, raw: dict, gt_boxes, gt_valid) -> dict[str, tf.Tensor]:
        options = self.options
        targets = rpn_targets(self.anchors, gt_boxes, gt_valid, options.rpn_samples,
                              options.rpn_positive_fraction, options.rpn_positive_iou,
                              options.rpn_negative_iou, seed=self.seed_generator)
        return {"rpn_objectness": rpn_objectness_loss(raw["rpn_objectness"], targets["objectness"]),
                "rpn_box": rpn_box_loss(raw["rpn_deltas"], targets["box_targets"], targets["objectness"])}

    def roi_losses(self, features, y, sampled: dict, training=True) -> dict[str, tf.Tensor]:
        """Box-head losses on the sampled RoIs (Mask R-CNN adds the mask loss)."""
        pooled = self.pool(features, sampled["rois"], self.options.box_roi_size)
        head = self.box_head(pooled, training=training)
        return {"roi_class": roi_class_loss(head["class_logits"], sampled["classes"]),
                "roi_box": roi_box_loss(head["box_deltas"], sampled["box_targets"], sampled["classes"],
                                        sampled["positive"])}

    # ------------------------------------------------------------------ serialization

    def with_backbone(self, backbone):
        """A model of the same class on `backbone`, sharing this model's head layers."""
        return type(self)(backbone, **self._head_layers(), options=self.options)

    def _head_layers(self) -> dict:
        return {"neck": self.neck, "rpn_head": self.rpn_head, "box_head": self.box_head}

    def get_config(self):
        config = super().get_config()  # the nested models (`nested_model_keys`)
        config.update({"image_size": list(self.image_size), "options": self.options.to_dict()})
        return config


def build_faster_rcnn(backbone, num_classes: int, image_size=None, levels=FEATURE_LEVELS,
                      fpn_channels: int = 64, box_head_units: int = 256,
                      options: TwoStageOptions | dict | None = None,
                      init: str = DEFAULT_HEAD_INITIALIZER) -> FasterRCNN:
    """A `FasterRCNN` with fresh neck, RPN head and box head (widths from the options).

    `init`: kernel initializer of the box head's hidden layers (`task_model.HEAD_INITIALIZERS`);
    the RPN and the box head's output layers keep their small-normal starts.
    """
    options = options if isinstance(options, TwoStageOptions) else TwoStageOptions.from_dict(options)
    neck = FeaturePyramid(levels, fpn_channels, name="fpn")
    rpn_head = RPNHead(levels, options.anchors_per_cell, fpn_channels, name="rpn_head")
    box_head = BoxHead(num_classes, box_head_units, kernel_initializer=init, name="box_head")
    return FasterRCNN(backbone, neck, rpn_head, box_head, image_size=image_size, options=options)

