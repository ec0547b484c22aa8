""""The score" of a task model for one image, per family: what every explanation differentiates or occludes.

    targets = explanation_targets(model, image, class_names)   # image float32 [S, S, 3], 0..255
    targets[0].score(images)          # [B] differentiable in the pixels
    targets[0].occlusion_score(images)  # [B], what occlusion sensitivity maps

What a user means by the score depends on the family:
- classification + localization: the probability of one class (default: the predicted one);
- detectors (YOLO, SSD, Faster/Mask R-CNN): ONE detection's score. Each detection kept
  by NMS is one prior's row (a grid point, a default box, or a proposal and class) of the
  decoded outputs before NMS, which NMS passes through unchanged; `detection_candidates`
  recomputes those rows differentiably (for R-CNN the proposal boxes are held constant:
  the gradient flows through the pooled features and the box head), and the row whose
  box and score equal the detection's is the one explained. So every detection of an
  image gets its own target. Under occlusion the image changes and boxes move: there the
  score is the best score of a same-class detection at IoU >= 0.5 with the original box
  (0 when none), so a moved box still counts;
- semantic segmentation: the mean probability of one class over a region (default: the
  pixels predicted as that class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from detseg.models.clsloc.classification_localization import ClassificationLocalizationModel
from detseg.models.ops.anchors import grid_points
from detseg.models.ops.box_coding import decode_center_size
from detseg.models.ops.box_ops import clip_boxes, elementwise_iou
from detseg.models.ops.roi_sampling import FASTER_RCNN_VARIANCES
from detseg.models.rcnn.faster_rcnn import FasterRCNN
from detseg.models.rcnn.rpn_proposals import generate_proposals
from detseg.models.segmentation.semantic_segmenter import SemanticSegmenter
from detseg.models.ssd.detector import SsdDetector
from detseg.models.ssd.head import SSD_BACKGROUND
from detseg.models.yolo.detector import YoloDetector
from detseg.models.yolo.head import YOLO_STRIDES
from detseg.models.yolo.loss import decode_yolo_boxes

MATCH_IOU = 0.5  # occlusion: a detection of the same class at least this close is "the same"
DETECTORS = (YoloDetector, SsdDetector, FasterRCNN)
Scores = Callable[[tf.Tensor], tf.Tensor]


class ExplanationError(ValueError):
    """A model, image or option the explanations cannot work with; the message says which."""


@dataclass(frozen=True)
class ExplanationTarget:
    """One score to explain in one image.

    `score(images float32 [B, S, S, 3]) -> float32 [B]`, differentiable in the pixels;
    `occlusion_score`: the same meaning for a changed image (detectors: best match);
    `box`: xyxy px of the model frame (detections, cls+loc); `region`: bool `[S, S]`
    (semantic); `label`: what the page calls it.
    """

    label: str
    class_index: int
    score: Scores
    occlusion_score: Scores
    box: tuple[float, float, float, float] | None = None
    region: np.ndarray | None = None


def model_frame_size(model: keras.Model) -> tuple[int, int]:
    """`(H, W)` of the pixels the model takes."""
    shape = getattr(model, "image_size", None)
    if shape is None:
        shape = model.encoder.input.shape[1:3]
    return int(shape[0]), int(shape[1])


def explanation_targets(model: keras.Model, image, class_names: Sequence[str] = (), max_targets: int = 3,
                        min_score: float = 0.0, class_index: int | None = None) -> list[ExplanationTarget]:
    """The targets of `image` (float32 `[S, S, 3]` in the model frame), best first, at most `max_targets`.

    `class_index` picks the class (cls+loc; semantic: 0 is background, i + 1 class i);
    detectors explain their own detections scoring at least `min_score`.
    """
    images = tf.convert_to_tensor(np.asarray(image, np.float32)[np.newaxis])
    name = _namer(class_names)
    if isinstance(model, DETECTORS):
        return detection_targets(model, images, name, max_targets, min_score)
    if isinstance(model, ClassificationLocalizationModel):
        return [_class_target(model, images, name, class_index)]
    if isinstance(model, SemanticSegmenter):
        return semantic_targets(model, images, name, max_targets, class_index)
    raise ExplanationError(f"cannot explain a {type(model).__name__}: expected a detseg task model")


def _namer(class_names: Sequence[str]) -> Callable[[int], str]:
    return lambda index: class_names[index] if 0 <= index < len(class_names) else f"class_{index}"


# ---------------------------------------------------------------------- cls+loc


def _class_target(model, images, name, class_index) -> ExplanationTarget:
    outputs = model(images, training=False)
    probabilities = outputs["class_probabilities"][0].numpy()
    index = int(np.argmax(probabilities)) if class_index is None else int(class_index)
    if not 0 <= index < len(probabilities):
        raise ExplanationError(f"class {index} is out of range: the model has {len(probabilities)} classes")

    def score(batch):
        return model(batch, training=False)["class_probabilities"][:, index]

    box = tuple(float(v) for v in outputs["box"][0].numpy())
    return ExplanationTarget(f"{name(index)} {probabilities[index]:.2f}", index, score, score, box)


# ---------------------------------------------------------------------- semantic


def semantic_targets(model, images, name, max_targets: int, class_index=None) -> list[ExplanationTarget]:
    """One target per class present in the class map (background last), or the one asked for."""
    probabilities = tf.nn.softmax(model(images, training=False), axis=-1)[0].numpy()
    class_map = probabilities.argmax(-1)
    if class_index is not None:
        if not 0 <= int(class_index) < probabilities.shape[-1]:
            raise ExplanationError(f"class {class_index} is out of range: the model has "
                                   f"{probabilities.shape[-1]} classes (0 is background)")
        classes = [int(class_index)]
    else:
        counts = np.bincount(class_map.ravel(), minlength=probabilities.shape[-1])
        classes = [c for c in np.argsort(-counts[1:]) + 1 if counts[c] > 0][:max_targets] or [1]
    targets = []
    for index in classes:
        region = class_map == index
        label = "background" if index == 0 else name(index - 1)
        if not region.any():  # nothing predicted as this class: its mean over the whole image
            region = np.ones_like(region)
            label += ", predicted nowhere"
        targets.append(semantic_region_target(model, index, region, label))
    return targets


def semantic_region_target(model, class_index: int, region: np.ndarray, label: str) -> ExplanationTarget:
    """Mean probability of `class_index` over the bool `[S, S]` `region`."""
    weights = tf.constant(region.astype(np.float32))

    def score(batch):
        probabilities = tf.nn.softmax(model(batch, training=False), axis=-1)[..., class_index]
        return tf.reduce_sum(probabilities * weights, axis=[1, 2]) / tf.reduce_sum(weights)

    return ExplanationTarget(f"{label} (mean over {int(region.sum())} px)", class_index, score, score,
                             region=region)


# ---------------------------------------------------------------------- detectors


def detection_candidates(model: keras.Model, images) -> tuple[tf.Tensor, tf.Tensor]:
    """Every prior's decoded box and class scores before NMS, differentiable in `images`.

    Returns `boxes float32 [B, A, 4]` xyxy px clipped to the frame and `scores float32
    [B, A, C]` in 0..1: exactly what each family's decoder hands to `batched_nms`
    (YOLO: grid points; SSD: default boxes; R-CNN: one row per (proposal, class), the
    score in its own class's column only).
    """
    if isinstance(model, YoloDetector):
        raw = model(images, training=False)
        points, strides = grid_points(model.image_size, YOLO_STRIDES)
        boxes = decode_yolo_boxes(raw["box_distribution"], tf.constant(points), tf.constant(strides),
                                  model.config.reg_max)
        return clip_boxes(boxes, model.image_size), tf.sigmoid(tf.cast(raw["class_logits"], tf.float32))
    if isinstance(model, SsdDetector):
        raw = model(images, training=False)
        boxes = decode_center_size(raw["box_deltas"], tf.constant(model.anchors), model.config.variances)
        probabilities = tf.nn.softmax(tf.cast(raw["class_logits"], tf.float32), axis=-1)
        return clip_boxes(boxes, model.image_size), probabilities[..., SSD_BACKGROUND + 1:]
    if isinstance(model, FasterRCNN):
        return _two_stage_candidates(model, images)
    raise ExplanationError(f"{type(model).__name__} is not a detector")


def _two_stage_candidates(model: FasterRCNN, images):
    features = model.pyramid(images, training=False)
    rpn = model.rpn_head(features, training=False)
    proposals = tf.stop_gradient(generate_proposals(
        rpn["objectness"], rpn["deltas"], model.anchors, model.level_anchor_counts, model.image_size,
        model.options.test_proposals)["boxes"])
    head = model.box_head(model.pool(features, proposals, model.options.box_roi_size), training=False)
    # As rcnn.detections.detect_objects lays them out: row r * C + c holds class c's box and score.
    probabilities = tf.nn.softmax(tf.cast(head["class_logits"], tf.float32), axis=-1)[..., :-1]
    area = (proposals[..., 2] - proposals[..., 0]) * (proposals[..., 3] - proposals[..., 1])
    probabilities = tf.where((area > 0.0)[..., tf.newaxis], probabilities, 0.0)
    boxes = clip_boxes(decode_center_size(head["box_deltas"], proposals[:, :, tf.newaxis, :],
                                          FASTER_RCNN_VARIANCES), model.image_size)
    num_classes = model.num_classes
    batch = tf.shape(images)[0]
    scores = probabilities[..., tf.newaxis] * tf.one_hot(tf.range(num_classes), num_classes)
    return tf.reshape(boxes, [batch, -1, 4]), tf.reshape(scores, [batch, -1, num_classes])


def detection_targets(model, images, name, max_targets: int, min_score: float) -> list[ExplanationTarget]:
    """One target per detection of the image (NMS output order: best first)."""
    detections = {key: value[0].numpy() for key, value in model.predict_outputs(images).items()
                  if key in ("boxes", "scores", "classes", "num_detections")}
    boxes, scores = (t[0].numpy() for t in detection_candidates(model, images))
    targets = []
    for k in range(int(detections["num_detections"])):
        score, index = float(detections["scores"][k]), int(detections["classes"][k])
        if score < min_score or len(targets) >= max_targets:
            break
        box = detections["boxes"][k]
        row = int(np.argmin(np.abs(boxes - box).sum(-1) + np.abs(scores[:, index] - score)))
        targets.append(ExplanationTarget(f"#{k + 1} {name(index)} {score:.2f}", index,
                                         _row_score(model, row, index),
                                         _matching_score(model, box, index),
                                         tuple(float(v) for v in box)))
    return targets


def _row_score(model, row: int, class_index: int) -> Scores:
    def score(batch):
        return detection_candidates(model, batch)[1][:, row, class_index]

    return score


def _matching_score(model, box, class_index: int) -> Scores:
    """Best score of a class-`class_index` detection at IoU >= `MATCH_IOU` with `box` (0 if none)."""
    reference = tf.constant(np.asarray(box, np.float32)[np.newaxis, np.newaxis])

    def score(batch):
        found = model.predict_outputs(batch)
        ious = elementwise_iou(found["boxes"], reference)  # [B, K]
        slots = tf.range(tf.shape(found["scores"])[1])[tf.newaxis, :]
        same = ((found["classes"] == class_index) & (ious >= MATCH_IOU)
                & (slots < found["num_detections"][:, tf.newaxis]))
        return tf.reduce_max(tf.where(same, found["scores"], 0.0), axis=1)

    return score
