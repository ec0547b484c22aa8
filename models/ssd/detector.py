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

import keras
import tensorflow as tf

from detseg.models.dense_detector import DenseDetector, backbone_image_size, config_from, feature_shapes
from detseg.models.ops.box_coding import decode_center_size
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.matching import IouMatcher
from detseg.models.ops.nms import batched_nms
from detseg.models.ssd.head import SSD_BACKGROUND, SsdConfigError, SsdHeadConfig, build_ssd_network
from detseg.models.ssd.loss import ssd_losses, ssd_targets


@keras.saving.register_keras_serializable(package="detseg")
class SsdDetector(DenseDetector):
    """The SSD task model (module docstring); arguments as `DenseDetector`'s (square frames only)."""

    config_class = SsdHeadConfig
    loss_names = ("box", "class")

    @property
    def num_classes(self) -> int:
        return int(self.network.output["class_logits"].shape[-1]) - 1

    @property
    def anchors(self):
        """float32 `[A, 4]` xyxy px default boxes, in the network's output order."""
        return self._anchors

    def resolve_image_size(self, backbone, image_size) -> tuple[int, int]:
        size = backbone_image_size(backbone, image_size, SsdConfigError)
        if size[0] != size[1]:
            raise SsdConfigError(f"SSD takes square inputs (letterboxed), got {size}")
        return size

    def check_network(self) -> None:
        self._anchors = self.config.anchors(self.image_size[0])(self.image_size)
        predicted = int(self.network.output["class_logits"].shape[1])
        if predicted != len(self._anchors):
            raise SsdConfigError(f"network '{self.network.name}' predicts {predicted} boxes but the config "
                                 f"lays out {len(self._anchors)} default boxes for {self.image_size}")
        self.matcher = IouMatcher(self.config.positive_iou, self.config.negative_iou, force_best_anchor=True)

    def losses_of(self, y, y_pred) -> dict[str, tf.Tensor]:
        """IoU matching, then smooth L1 + cross-entropy with hard negative mining."""
        config = self.config
        targets = ssd_targets(tf.constant(self._anchors), y["boxes"], y["classes"], self.matcher, config.variances)
        return ssd_losses(y_pred, targets, config.negatives_per_positive, config.min_negatives)

    def decode(self, raw) -> dict[str, tf.Tensor]:
        """Raw outputs -> padded detections after NMS (module docstring)."""
        boxes = decode_center_size(raw["box_deltas"], tf.constant(self._anchors), self.config.variances)
        boxes = clip_boxes(boxes, self.image_size)
        probabilities = tf.nn.softmax(tf.cast(raw["class_logits"], tf.float32), axis=-1)
        scores = probabilities[..., SSD_BACKGROUND + 1:]
        return batched_nms(boxes, scores, self.nms_config)


def build_ssd_detector(backbone: keras.Model, num_classes: int, config=None) -> SsdDetector:
    """An `SsdDetector` with a fresh network sized for `backbone`'s P3..P5 features."""
    config = config_from(SsdHeadConfig, config)
    return SsdDetector(backbone, build_ssd_network(feature_shapes(backbone), num_classes, config), config)
