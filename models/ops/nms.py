"""Class-aware, batched non-maximum suppression with padded, fixed-size outputs.

`batched_nms(boxes, scores, ...)` takes every prior's decoded box and per-class scores
and returns at most `max_detections` detections per image:

    {"boxes": float32 [B, K, 4] xyxy px, "scores": float32 [B, K],
     "classes": int32 [B, K], "num_detections": int32 [B]}

sorted by score, the first `num_detections[b]` rows of image `b` real, the rest padding
(box 0, score 0, class `PAD_CLASS`). K is `max_detections` (static), so the
outputs batch and export with fixed shapes.

Suppression is per class: two boxes of different classes never suppress each other, and
one box may be kept for several classes (each with its own score), which is what COCO
evaluation rewards. It runs on `tf.image.combined_non_max_suppression`, a single TF op:
graph mode, SavedModel export and TF Serving all work; no Python loop over images.
Scores are probabilities (after sigmoid/softmax), the same scale as `score_threshold`.
For class-agnostic suppression (RPN proposals) pass one score column: `[B, A, 1]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detseg.core.contract import PAD_CLASS


class NmsError(ValueError):
    """NMS parameters out of range."""


@dataclass(frozen=True)
class NmsConfig:
    """What `batched_nms` keeps.

    - `iou_threshold`: a box whose IoU with a higher-scoring kept box of the same class
      exceeds this is suppressed.
    - `score_threshold`: candidates scoring below this are dropped first. COCO-style
      evaluation wants it low (0.001-0.05: low-confidence detections only add recall);
      a demo or a deployed model wants it higher.
    - `max_detections`: K, detections kept per image (all classes together).
    - `max_detections_per_class`: per class and image, before the merge (default K).
    """

    iou_threshold: float = 0.6
    score_threshold: float = 0.01
    max_detections: int = 100
    max_detections_per_class: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise NmsError(f"iou_threshold must be in 0..1, got {self.iou_threshold}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise NmsError(f"score_threshold must be in 0..1, got {self.score_threshold}")
        if int(self.max_detections) < 1:
            raise NmsError(f"max_detections must be >= 1, got {self.max_detections}")
        per_class = self.max_detections_per_class
        if per_class is not None and int(per_class) < 1:
            raise NmsError(f"max_detections_per_class must be >= 1 or None, got {per_class}")

    @property
    def per_class_limit(self) -> int:
        return int(self.max_detections_per_class or self.max_detections)

    def get_config(self) -> dict:
        return {"iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold,
                "max_detections": self.max_detections,
                "max_detections_per_class": self.max_detections_per_class}


def batched_nms(boxes, scores, config: NmsConfig = NmsConfig()) -> dict[str, tf.Tensor]:
    """Per-class NMS of `boxes float [B, A, 4]` xyxy with `scores float [B, A, C]` in 0..1.

    Returns the padded detection dict of the module docstring, boxes in the same frame as
    the input (they are not clipped: clip them to the image before if you want).
    """
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    # combined_non_max_suppression reads boxes as (y0, x0, y1, x1) but only to compute
    # IoU, which is the same with x and y swapped; with clip_boxes=False it returns the
    # coordinates unchanged, so xyxy pixels pass straight through.
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :], scores,
        max_output_size_per_class=config.per_class_limit,
        max_total_size=int(config.max_detections),
        iou_threshold=float(config.iou_threshold),
        score_threshold=float(config.score_threshold),
        pad_per_class=False, clip_boxes=False)
    num_detections = tf.cast(valid, tf.int32)
    slots = tf.range(int(config.max_detections), dtype=tf.int32)[tf.newaxis, :]
    real = slots < num_detections[:, tf.newaxis]
    classes = tf.where(real, tf.cast(nmsed_classes, tf.int32), PAD_CLASS)
    return {
        "boxes": tf.where(real[..., tf.newaxis], nmsed_boxes, 0.0),
        "scores": tf.where(real, nmsed_scores, 0.0),
        "classes": classes,
        "num_detections": num_detections,
    }


def detections_in_use(num_detections: tf.Tensor) -> tf.Tensor:
    """`num_detections` int `[B]` -> int32 scalar `D`, the largest (0 for an empty batch).

    `batched_nms` puts each image's detections first, so slots `D..K-1` are padding in
    every image: work per detection (masks) needs only the first `D` slots.
    """
    return tf.reduce_max(tf.concat([tf.cast(num_detections, tf.int32), [0]], axis=0))
