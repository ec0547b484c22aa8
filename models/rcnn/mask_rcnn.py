"""`MaskRCNN`: `FasterRCNN` plus a mask head on 14x14 RoIAlign features (He et al. 2017).

Training adds a fifth loss, `mask_loss` (`models.mask_rcnn_targets`): the first
`options.masks_per_image` sampled RoIs of each image (positives come first) go through
RoIAlign 14x14 and the `MaskHead` (-> 28x28 per class); the BCE reads only the channel
of each positive RoI's ground-truth class. Targets need `"masks"` uint8 `[B, N, H, W]`
in `y` (the pipelines' `instance` task).

Prediction (`predict_step`) adds `"masks"` float32 `[B, K, H, W]`: each detection's mask probability
(its class's channel, sigmoid) pasted into the model's input frame
(`models.mask_rcnn_paste`), 0 outside its box and on padding rows. The export maps
them to the original image size and thresholds them at 0.5.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.core.contract import FEATURE_LEVELS
from detseg.models.rcnn.faster_rcnn import FASTER_RCNN_LOSSES, FasterRCNN
from detseg.models.rcnn.box_head import BoxHead
from detseg.models.rcnn.losses import class_specific
from detseg.models.necks.fpn import FeaturePyramid
from detseg.models.rcnn.options import TwoStageConfigError, TwoStageOptions
from detseg.models.rcnn.mask_head import MaskHead
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER
from detseg.models.ops.nms import detections_in_use
from detseg.models.rcnn.mask_paste import paste_masks
from detseg.models.rcnn.mask_targets import mask_loss, mask_targets
from detseg.models.rcnn.rpn_head import RPNHead

MASK_RCNN_LOSSES = FASTER_RCNN_LOSSES + ("mask",)


@keras.saving.register_keras_serializable(package="detseg")
class MaskRCNN(FasterRCNN):
    """Faster R-CNN with a mask branch. Build one with `build_mask_rcnn`.

    Args: as `FasterRCNN`, plus `mask_head` (a `MaskHead` with one channel per class).
    """

    loss_names = MASK_RCNN_LOSSES
    extra_head_names = ("mask_head",)
    nested_model_keys = FasterRCNN.nested_model_keys + ("mask_head",)

    def __init__(self, backbone, neck: FeaturePyramid, rpn_head: RPNHead, box_head: BoxHead,
                 mask_head: MaskHead, image_size=None, options: TwoStageOptions | dict | None = None,
                 **kwargs):
        super().__init__(backbone, neck, rpn_head, box_head, image_size=image_size, options=options,
                         mask_head=mask_head, **kwargs)

    def _check_parts(self) -> None:
        super()._check_parts()
        if self.mask_head.num_classes != self.box_head.num_classes:
            raise TwoStageConfigError(f"mask head has {self.mask_head.num_classes} classes, box head "
                                      f"{self.box_head.num_classes}")

    def build_heads(self, feature_shapes: dict) -> None:
        super().build_heads(feature_shapes)
        size = self.options.mask_roi_size
        if not self.mask_head.built:
            self.mask_head.build((None, None, size, size, self.neck.channels))

    def _head_layers(self) -> dict:
        return {**super()._head_layers(), "mask_head": self.mask_head}

    def class_mask_logits(self, features, boxes, classes, training=False) -> tf.Tensor:
        """Boxes `[B, M, 4]` and their classes `[B, M]` -> their class's mask logits `[B, M, S, S]`."""
        pooled = self.pool(features, boxes, self.options.mask_roi_size)
        logits = self.mask_head(pooled, training=training)              # [B, M, S, S, C]
        return class_specific(tf.transpose(logits, [0, 1, 4, 2, 3]), classes)

    def roi_losses(self, features, y, sampled: dict, training=True) -> dict[str, tf.Tensor]:
        losses = super().roi_losses(features, y, sampled, training)
        if "masks" not in y:
            raise TwoStageConfigError("Mask R-CNN targets need 'masks' uint8 [B, N, H, W] (the 'instance' task)")
        count = self.options.masks_per_image
        rois = sampled["rois"][:, :count]
        classes = sampled["classes"][:, :count]
        positive = sampled["positive"][:, :count]
        pooled = self.pool(features, rois, self.options.mask_roi_size)
        logits = self.mask_head(pooled, training=training)
        size = int(logits.shape[2])
        targets = mask_targets(y["masks"], sampled["matched_gt"][:, :count], rois, size)
        losses["mask"] = mask_loss(logits, tf.stop_gradient(targets), classes, positive)
        return losses

    def add_detection_outputs(self, features, detections: dict, training=False) -> dict:
        """Adds `"masks"` float32 `[B, K, H, W]` (module docstring).

        The mask head and the pasting run on the first `D` slots only, `D` the batch's largest
        `num_detections`: the slots after an image's detections are padding, and their masks
        are zeros either way (with a score threshold, `D` is often a small part of `K`).
        """
        counts = tf.cast(detections["num_detections"], tf.int32)
        used = detections_in_use(counts)
        boxes = detections["boxes"][:, :used]
        logits = self.class_mask_logits(features, boxes, tf.maximum(detections["classes"][:, :used], 0), training)
        real = tf.cast(tf.range(used)[tf.newaxis, :] < counts[:, tf.newaxis], tf.float32)
        probabilities = tf.sigmoid(logits) * real[..., tf.newaxis, tf.newaxis]
        masks = paste_masks(probabilities, boxes, self.image_size)                    # [B, D, H, W]
        slots = tf.shape(detections["classes"])[1]
        masks = tf.pad(masks, [[0, 0], [0, slots - used], [0, 0], [0, 0]])
        masks.set_shape(detections["classes"].shape.concatenate(self.image_size))
        return {**detections, "masks": masks}


def build_mask_rcnn(backbone, num_classes: int, image_size=None, levels=FEATURE_LEVELS,
                    fpn_channels: int = 64, box_head_units: int = 256, mask_channels: int = 32,
                    mask_convs: int = 2, options: TwoStageOptions | dict | None = None,
                    init: str = DEFAULT_HEAD_INITIALIZER) -> MaskRCNN:
    """A `MaskRCNN` with fresh neck, RPN, box and mask heads (`init`: as `build_faster_rcnn`).

    `mask_channels` defaults to 32 (the paper: 256), which keeps the mask branch, run on
    every sampled positive and every detection, from dominating CPU training and inference.
    """
    options = options if isinstance(options, TwoStageOptions) else TwoStageOptions.from_dict(options)
    neck = FeaturePyramid(levels, fpn_channels, name="fpn")
    rpn_head = RPNHead(levels, options.anchors_per_cell, fpn_channels, name="rpn_head")
    box_head = BoxHead(num_classes, box_head_units, kernel_initializer=init, name="box_head")
    mask_head = MaskHead(num_classes, mask_channels, mask_convs, kernel_initializer=init, name="mask_head")
    return MaskRCNN(backbone, neck, rpn_head, box_head, mask_head, image_size=image_size, options=options)
