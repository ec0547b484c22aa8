"""Classification + localization: one class and one box per image, on a backbone's P5.

Three pieces, so that transfer learning can train them in two stages:

- `build_clsloc_head(feature_shape, num_classes)`: a separate functional model from
  P5 features `[B, h, w, c]` to `{"class_logits": [B, C], "box_normalized": [B, 4]}`.
  The box is xyxy NORMALIZED to the input frame (x / width, y / height, 0..1 through
  a sigmoid).
- `ClassificationLocalizationModel(backbone, head)`: the task model. Input raw pixels
  float32 `[B, H, W, 3]` in 0..255; `call` and `predict` both give `{"class_probabilities":
  [B, C] softmax, "box": [B, 4] xyxy PIXELS of the input frame}` (the names the export
  serves); targets `{"class": int32 [B],
  "box": float32 [B, 4] xyxy pixels}` (the batch contract). It owns the multitask loss
  and the metrics, so compile it with an optimizer only. With `backbone=None` (stage 1,
  bottleneck features) its input is the cached P5 features `[B, h, w, c]` and
  `image_size` says what frame the boxes are in; the same head object then goes into
  `ClassificationLocalizationModel(backbone, head)` for fine-tuning (stage 2).
- `build_classifier(backbone, num_classes)`: pooling + softmax on P5, for pretraining a
  backbone as an image classifier (`detseg pretrain`).

Metrics (names as `fit`/`evaluate` report them): `class_loss`, `box_loss`, `accuracy`,
`mean_iou` (IoU of predicted and true box), `localization_accuracy` (class right and
IoU >= 0.5). Images whose class is `NO_OBJECT` (-1) count in neither.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER, HEAD_OUTPUT_DTYPE, TaskModel
from detseg.models.clsloc.losses import (
    BOX_LOSSES, LOCALIZATION_IOU_THRESHOLD, SMOOTH_L1, box_ious, box_regression_loss, class_hits,
    classification_loss, localization_hits, object_mask)

BOX_POOLINGS = ("flatten", "average")
CLASS_POOLINGS = ("average", "max")
FEATURE_LEVEL = "P5"


class ClassificationLocalizationError(ValueError):
    """The head, backbone and options of a classification + localization model do not fit."""


def build_clsloc_head(feature_shape, num_classes: int, hidden_units: int = 256,
                      box_channels: int = 32, dropout: float = 0.2, box_pooling: str = "flatten",
                      class_pooling: str = "average", init: str = DEFAULT_HEAD_INITIALIZER,
                      name: str = "clsloc_head") -> keras.Model:
    """The head: P5 features `[B, h, w, c]` -> class logits `[B, C]` and a normalized box `[B, 4]`.

    Class branch: global pooling -> dense(hidden_units, relu) -> dense(C). Average
    pooling (default) mixes the object's features with the background's; `"max"` keeps
    the strongest response per channel, which suits small objects on busy backgrounds.
    Box branch: with `box_pooling="flatten"` (default) a 1x1 conv to `box_channels`
    then flatten, which keeps WHERE the features are: global pooling throws position
    away, and a frozen backbone (stage 1) cannot learn to encode it in the channels.
    `"average"` pools like the class branch (fewer weights, needs fine-tuning to
    localize). Then dense(hidden_units, relu) -> dense(4, sigmoid): xyxy in 0..1.
    `init`: kernel initializer of every conv and dense layer (`task_model.HEAD_INITIALIZERS`);
    the two output layers are float32 under any mixed-precision policy.
    """
    if box_pooling not in BOX_POOLINGS:
        raise ClassificationLocalizationError(
            f"box_pooling {box_pooling!r}: expected one of {BOX_POOLINGS}")
    if class_pooling not in CLASS_POOLINGS:
        raise ClassificationLocalizationError(
            f"class_pooling {class_pooling!r}: expected one of {CLASS_POOLINGS}")
    if int(num_classes) < 1:
        raise ClassificationLocalizationError(f"num_classes must be >= 1, got {num_classes}")
    features = keras.Input(shape=tuple(int(dim) for dim in feature_shape), name="features")
    pooling = (keras.layers.GlobalMaxPooling2D if class_pooling == "max"
               else keras.layers.GlobalAveragePooling2D)
    pooled = pooling(name="class_pool")(features)
    x = keras.layers.Dropout(dropout, name="class_dropout")(pooled)
    x = keras.layers.Dense(hidden_units, activation="relu", kernel_initializer=init, name="class_hidden")(x)
    logits = keras.layers.Dense(int(num_classes), kernel_initializer=init, dtype=HEAD_OUTPUT_DTYPE,
                                name="class_logits")(x)
    if box_pooling == "flatten":
        y = keras.layers.Conv2D(box_channels, 1, activation="relu", kernel_initializer=init,
                                name="box_reduce")(features)
        y = keras.layers.Flatten(name="box_flatten")(y)
    else:
        y = keras.layers.GlobalAveragePooling2D(name="box_pool")(features)
    y = keras.layers.Dropout(dropout, name="box_dropout")(y)
    y = keras.layers.Dense(hidden_units, activation="relu", kernel_initializer=init, name="box_hidden")(y)
    box = keras.layers.Dense(4, activation="sigmoid", kernel_initializer=init, dtype=HEAD_OUTPUT_DTYPE,
                             name="box_normalized")(y)
    return keras.Model(features, {"class_logits": logits, "box_normalized": box}, name=name)


def build_classifier(backbone: keras.Model, num_classes: int, dropout: float = 0.2,
                     name: str = "pretrain_classifier") -> keras.Model:
    """Raw pixels `[B, H, W, 3]` -> class probabilities `[B, C]` (P5 -> pool -> dense softmax).

    Train it with sparse categorical cross-entropy; the backbone is shared, not copied,
    so afterwards `backbone.save_weights("x.weights.h5")` saves what it learned, and
    `build_backbone(name, image_size, weights="x.weights.h5")` loads it.
    """
    images = keras.Input(shape=tuple(backbone.input_shape[1:]), name="images")
    features = backbone(images)[FEATURE_LEVEL]
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    probs = keras.layers.Dense(int(num_classes), activation="softmax", dtype=HEAD_OUTPUT_DTYPE,
                               name="class_probs")(x)
    return keras.Model(images, probs, name=name)


@keras.saving.register_keras_serializable(package="detseg")
class ClassificationLocalizationModel(TaskModel):
    """Backbone (optional) + head, with the multitask loss and metrics (module docstring).

    Args:
        backbone: a `build_backbone` model, or None when the inputs are P5 features.
        head: a `build_clsloc_head` model whose input shape is the backbone's P5 shape.
        image_size: `(H, W)` of the frame boxes are in; taken from the backbone when
            there is one (and must agree if given), required without one.
        box_loss: `"smooth_l1"` or `"giou"`, on normalized boxes.
        class_loss_weight, box_loss_weight: loss = w_c * cross-entropy + w_b * box loss.
        smooth_l1_delta: where smooth L1 turns linear, as a fraction of the frame.
        iou_threshold: IoU from which a box counts for `localization_accuracy`.
    """

    nested_model_keys = ("backbone", "head")

    def __init__(self, backbone: keras.Model | None, head: keras.Model, image_size=None,
                 box_loss: str = SMOOTH_L1, class_loss_weight: float = 1.0,
                 box_loss_weight: float = 1.0, smooth_l1_delta: float = 0.1,
                 iou_threshold: float = LOCALIZATION_IOU_THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        if box_loss not in BOX_LOSSES:
            raise ClassificationLocalizationError(f"box_loss {box_loss!r}: expected one of {BOX_LOSSES}")
        if min(class_loss_weight, box_loss_weight) < 0 or smooth_l1_delta <= 0:
            raise ClassificationLocalizationError(
                "class_loss_weight and box_loss_weight must be >= 0 and smooth_l1_delta > 0, got "
                f"{class_loss_weight}, {box_loss_weight}, {smooth_l1_delta}")
        self.backbone = backbone
        self.head = head
        self.image_size = _resolved_image_size(backbone, image_size)
        _check_head_fits(backbone, head)
        self.box_loss = box_loss
        self.class_loss_weight = float(class_loss_weight)
        self.box_loss_weight = float(box_loss_weight)
        self.smooth_l1_delta = float(smooth_l1_delta)
        self.iou_threshold = float(iou_threshold)
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.mean_iou_tracker = keras.metrics.Mean(name="mean_iou")
        self.localization_tracker = keras.metrics.Mean(name="localization_accuracy")
        # The sub-models hold every variable already.
        self.built = True

    @property
    def num_classes(self) -> int:
        return int(self.head.output["class_logits"].shape[-1])

    def call(self, inputs, training=False):
        """Pixels `[B, H, W, 3]` (or P5 features without a backbone) -> `{"class_probabilities", "box"}`."""
        features = inputs
        if self.backbone is not None:
            features = self.backbone(inputs, training=training)[FEATURE_LEVEL]
        outputs = self.head(features, training=training)
        box = _ordered_corners(outputs["box_normalized"]) * self._frame_scale(outputs["box_normalized"].dtype)
        return {"class_probabilities": tf.nn.softmax(outputs["class_logits"], axis=-1), "box": box}

    def predict_outputs(self, images) -> dict[str, tf.Tensor]:
        """The class probabilities and the box in the input frame: `call`'s outputs, already decoded."""
        return self(images, training=False)

    def _frame_scale(self, dtype):
        """`[4]` = (W, H, W, H): normalized xyxy -> pixels of the input frame."""
        height, width = self.image_size
        return tf.constant([width, height, width, height], dtype=dtype)

    def task_loss(self, x, y, y_pred, sample_weight=None, training=True):
        """`w_c * cross-entropy + w_b * box loss`, each a mean over the batch (NO_OBJECT -> 0)."""
        class_true, box_true = _targets(y)
        weights = _sample_weights(class_true, sample_weight)
        scale = self._frame_scale(tf.float32)
        box_true = box_true / scale
        box_pred = tf.cast(y_pred["box"], tf.float32) / scale
        class_loss = _batch_mean(classification_loss(class_true, y_pred["class_probabilities"]), weights)
        box_loss = _batch_mean(
            box_regression_loss(self.box_loss, box_true, box_pred, self.smooth_l1_delta), weights)
        self.class_loss_tracker.update_state(class_loss)
        self.box_loss_tracker.update_state(box_loss)
        return self.class_loss_weight * class_loss + self.box_loss_weight * box_loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        class_true, box_true = _targets(y)
        weights = _sample_weights(class_true, sample_weight)
        self.accuracy_tracker.update_state(class_hits(class_true, y_pred["class_probabilities"]), weights)
        self.mean_iou_tracker.update_state(box_ious(box_true, y_pred["box"]), weights)
        self.localization_tracker.update_state(
            localization_hits(class_true, y_pred["class_probabilities"], box_true, y_pred["box"],
                              self.iou_threshold), weights)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_size": list(self.image_size),
            "box_loss": self.box_loss,
            "class_loss_weight": self.class_loss_weight,
            "box_loss_weight": self.box_loss_weight,
            "smooth_l1_delta": self.smooth_l1_delta,
            "iou_threshold": self.iou_threshold,
        })
        return config


def _resolved_image_size(backbone, image_size) -> tuple[int, int]:
    if backbone is None:
        if image_size is None:
            raise ClassificationLocalizationError(
                "image_size (H, W) is required without a backbone: boxes are pixels of that frame")
        return tuple(int(side) for side in image_size)
    backbone_size = tuple(int(side) for side in backbone.input_shape[1:3])
    if image_size is not None and tuple(int(side) for side in image_size) != backbone_size:
        raise ClassificationLocalizationError(
            f"image_size {tuple(image_size)} differs from the backbone's input size {backbone_size}")
    return backbone_size


def _check_head_fits(backbone, head) -> None:
    if "class_logits" not in head.output or "box_normalized" not in head.output:
        raise ClassificationLocalizationError(
            f"head '{head.name}' must output 'class_logits' and 'box_normalized' (build_clsloc_head)")
    if backbone is None:
        return
    produced = tuple(backbone.output[FEATURE_LEVEL].shape[1:])
    expected = tuple(head.input_shape[1:])
    if produced != expected:
        raise ClassificationLocalizationError(
            f"head '{head.name}' takes features {expected} but backbone '{backbone.name}' gives "
            f"{FEATURE_LEVEL} {produced}")


def _targets(y):
    """The batch contract's `{"class": [B], "box": [B, 4]}` as int32 `[B]`, float32 `[B, 4]`."""
    if not isinstance(y, dict) or "class" not in y or "box" not in y:
        raise ClassificationLocalizationError(
            "targets must be a dict {'class': int32 [B], 'box': float32 [B, 4] xyxy pixels}")
    return (tf.reshape(tf.cast(y["class"], tf.int32), [-1]),
            tf.reshape(tf.cast(y["box"], tf.float32), [-1, 4]))


def _ordered_corners(boxes):
    """`[B, 4]` -> the same boxes with x_min <= x_max and y_min <= y_max."""
    x0, y0, x1, y1 = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([tf.minimum(x0, x1), tf.minimum(y0, y1),
                     tf.maximum(x0, x1), tf.maximum(y0, y1)], axis=-1)


def _sample_weights(class_true, sample_weight):
    """float32 `[B]`: the caller's sample weights (default 1), 0 for NO_OBJECT images."""
    weights = object_mask(class_true)
    if sample_weight is not None:
        weights = weights * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return weights


def _batch_mean(values, weights):
    """Sum of weighted values over the batch size (Keras' "sum_over_batch_size")."""
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.cast(tf.size(values), tf.float32))
