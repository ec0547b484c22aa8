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
  (pipelines / serving know the transform); `predict_step` is what the export serves
  (`serving.serving_module.serving_module_for`).

Why anchor-free with task-aligned assignment rather than YOLOv3's anchors: no anchor
shapes to tune per dataset, one prior per cell (3-9x fewer outputs to decode and NMS),
and the assigner picks positives by predicted quality, which ranks boxes better for COCO
mAP at strict IoU thresholds (YOLOv8, TOOD).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.dense_detector import DenseDetector, backbone_image_size, config_from, feature_shapes
from detseg.models.ops.anchors import grid_points
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.nms import batched_nms
from detseg.models.yolo.assigner import task_aligned_assign
from detseg.models.yolo.head import YOLO_STRIDES, YoloConfigError, YoloHeadConfig
from detseg.models.yolo.loss import decode_yolo_boxes, yolo_losses


@keras.saving.register_keras_serializable(package="detseg")
class YoloDetector(DenseDetector):
    """The YOLO task model (module docstring); arguments as `DenseDetector`'s.

    The loss, the task-aligned assigner and NMS read `config` too.
    """

    config_class = YoloHeadConfig
    loss_names = ("box", "class", "dfl")

    @property
    def num_classes(self) -> int:
        return int(self.network.output["class_logits"].shape[-1])

    def resolve_image_size(self, backbone, image_size) -> tuple[int, int]:
        return backbone_image_size(backbone, image_size, YoloConfigError)

    def check_network(self) -> None:
        points, strides = grid_points(self.image_size, YOLO_STRIDES)
        expected = int(self.network.output["class_logits"].shape[1])
        if expected != len(points):
            raise YoloConfigError(f"network '{self.network.name}' predicts {expected} points but a "
                                  f"{self.image_size} image has {len(points)} grid points")
        self._points, self._strides = points, strides

    def _priors(self):
        return tf.constant(self._points), tf.constant(self._strides)

    def losses_of(self, y, y_pred) -> dict[str, tf.Tensor]:
        """Task-aligned assignment, then the box (GIoU), class (BCE) and DFL losses."""
        points, strides = self._priors()
        config = self.config
        pred_boxes = decode_yolo_boxes(y_pred["box_distribution"], points, strides, config.reg_max)
        targets = task_aligned_assign(tf.sigmoid(tf.cast(y_pred["class_logits"], tf.float32)), pred_boxes,
                                      points, y["boxes"], y["classes"], config.assign_topk,
                                      config.assign_alpha, config.assign_beta)
        return yolo_losses(y_pred, pred_boxes, targets, points, strides, config.reg_max)

    def boxes_and_scores(self, raw) -> tuple[tf.Tensor, tf.Tensor]:
        """Raw outputs -> every point's box `[B, A, 4]` xyxy px (clipped to the frame) and
        class scores `[B, A, C]` (sigmoid): what NMS reads."""
        points, strides = self._priors()
        boxes = decode_yolo_boxes(raw["box_distribution"], points, strides, self.config.reg_max)
        return clip_boxes(boxes, self.image_size), tf.sigmoid(tf.cast(raw["class_logits"], tf.float32))

    def decode(self, raw) -> dict[str, tf.Tensor]:
        """Raw outputs -> padded detections after NMS (module docstring)."""
        return batched_nms(*self.boxes_and_scores(raw), self.nms_config)


def build_yolo_detector(backbone: keras.Model, num_classes: int, config=None) -> YoloDetector:
    """A `YoloDetector` with a fresh network sized for `backbone`'s P3..P5 features."""
    from detseg.models.yolo.head import build_yolo_network

    config = config_from(YoloHeadConfig, config)
    return YoloDetector(backbone, build_yolo_network(feature_shapes(backbone), num_classes, config), config)
