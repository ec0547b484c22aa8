"""`EnsembleModel`: several task models of one task run as one, their predictions merged.

    ensemble = EnsembleModel([model_a, model_b, model_c], task=DETECTION)
    predictions = ensemble.predict_step(pixels)   # the members' task's own prediction dict

Every member is a detseg task model (`models.task_model.TaskModel`, or any Keras model
whose `predict_step` returns its task's decoded prediction dict) trained at the same
image size on the same classes; each gets the same pixels `float32 [B, S, S, 3]` in
0..255 and its predictions (in the `S x S` input frame) are merged into ONE dict of the
same names and shapes, so whatever serves, exports or evaluates a single model
(`serving.serving_module.serving_module_for`, `training.predictions.model_predictions`)
takes an ensemble unchanged. The merge, by task, with member weights `w` (default 1):

- detection: weighted box fusion of all members' detections (`models.ops.box_fusion`,
  the algorithm of `ensemble_boxes.weighted_boxes_fusion`): same-class boxes that overlap
  are averaged, weighted by score x member weight; a box found by fewer than all members
  scores lower. `{"boxes", "scores", "classes", "num_detections"}`, K = the members' most.
- instance (Mask R-CNN): the boxes as for detection; each fused detection's mask is the
  average of the fused candidates' mask probabilities `[S, S]`, weighted as their boxes
  were (`fusion_weights`), and then thresholded by the export as a single model's masks
  are. Boxes and masks fuse together, so a fused box and its mask come from the same
  candidates; averaging probabilities (not 0/1 masks) keeps the members' soft edges.
- semantic: the weighted mean of the members' class probabilities `[B, S, S, C + 1]`
  (softmax of their logits when they give no probabilities) and its argmax:
  `{"probabilities", "class_map"}`.
- classification + localization: the weighted means of the class probabilities `[B, C]`
  and of the boxes `[B, 4]`: `{"class_probabilities", "box"}`.

An ensemble of one member predicts exactly what that member predicts (its own dict,
passed through): there is nothing to merge, and fusing one detector's boxes with
themselves would merge its own neighbouring detections.

`call` returns the members' raw outputs, a list in member order. An ensemble is not
trained: it has no loss.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from detseg.core.contract import DETECTION, INSTANCE, SEMANTIC, TASKS
from detseg.models.ops.box_fusion import BoxFusionConfig, weighted_box_fusion
from detseg.models.task_model import TaskModel, serialize_nested


class EnsembleError(ValueError):
    """Members or weights that cannot make an ensemble; the message says which."""


@keras.saving.register_keras_serializable(package="detseg")
class EnsembleModel(TaskModel):
    """Task models of one task as one model (module docstring).

    Args:
      members: the task models, in order (at least one).
      task: their task, one of `detseg.core.contract.TASKS`.
      weights: one positive weight per member (default 1 each).
      fusion: the detection merge's `BoxFusionConfig` (or its `get_config()` dict).
    """

    def __init__(self, members: Sequence[keras.Model], task: str, weights: Sequence[float] | None = None,
                 fusion: BoxFusionConfig | dict | None = None, **kwargs):
        super().__init__(**kwargs)
        members = list(members)
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        if task not in TASKS:
            raise EnsembleError(f"task must be one of {TASKS}, got {task!r}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) <= 0:
            raise EnsembleError(f"need one positive weight per member: {len(members)} members, weights {weights}")
        self.members = members
        self.task = task
        self.member_weights = weights  # (`weights` is Keras's list of variables)
        self.fusion = fusion if isinstance(fusion, BoxFusionConfig) else BoxFusionConfig(**(fusion or {}))

    def call(self, inputs, training=False):
        """Pixels `[B, S, S, 3]` -> the members' raw outputs, a list in member order."""
        return [member(inputs, training=training) for member in self.members]

    def predict_outputs(self, images) -> dict[str, tf.Tensor]:
        """Pixels `float32 [B, S, S, 3]` (0..255) -> the merged prediction dict (module docstring)."""
        outputs = [member.predict_step(images) for member in self.members]
        if len(outputs) == 1:
            return outputs[0]
        if self.task in (DETECTION, INSTANCE):
            return fuse_detections(outputs, self.member_weights, self.fusion)
        if self.task == SEMANTIC:
            return average_semantic(outputs, self.member_weights)
        return average_classification_localization(outputs, self.member_weights)

    def get_config(self):
        config = super().get_config()
        config.update({"members": [serialize_nested(member) for member in self.members], "task": self.task,
                       "weights": list(self.member_weights), "fusion": self.fusion.get_config()})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["members"] = [keras.saving.deserialize_keras_object(member, custom_objects=custom_objects)
                             for member in config["members"]]
        return cls(**config)


def fuse_detections(outputs: Sequence[dict], weights: Sequence[float],
                    fusion: BoxFusionConfig) -> dict[str, tf.Tensor]:
    """Members' detection dicts (`models.ops.nms`'s, each `[B, K_t, ...]`) -> one, by WBF;
    masks `[B, K_t, H, W]` (when every member has them) averaged with the fusion weights."""
    slots = [int(output["boxes"].shape[1]) for output in outputs]
    valid = tf.concat([_valid_slots(output) for output in outputs], axis=1)
    fused = weighted_box_fusion(
        tf.concat([tf.cast(o["boxes"], tf.float32) for o in outputs], axis=1),
        tf.concat([tf.cast(o["scores"], tf.float32) for o in outputs], axis=1),
        tf.concat([tf.cast(o["classes"], tf.int32) for o in outputs], axis=1),
        slots, weights, fusion, valid=valid)
    shares = fused.pop("fusion_weights")
    if all("masks" in output for output in outputs):
        masks = tf.concat([tf.cast(o["masks"], tf.float32) for o in outputs], axis=1)
        fused["masks"] = tf.einsum("bkn,bnhw->bkhw", shares, masks)
    return fused


def _valid_slots(output: dict) -> tf.Tensor:
    """`[B, K]` True on a member's real detections (its first `num_detections` slots)."""
    classes = output["classes"]
    if "num_detections" not in output:
        return tf.ones_like(classes, tf.bool)
    slots = tf.range(tf.shape(classes)[1])[tf.newaxis, :]
    return slots < tf.reshape(tf.cast(output["num_detections"], tf.int32), [-1, 1])


def _weighted_mean(tensors: Sequence[tf.Tensor], weights: Sequence[float]) -> tf.Tensor:
    total = float(sum(weights))
    return tf.add_n([tf.cast(t, tf.float32) * (w / total) for t, w in zip(tensors, weights)])


def average_semantic(outputs: Sequence[dict], weights: Sequence[float]) -> dict[str, tf.Tensor]:
    """Members' `{"probabilities" or "logits": [B, H, W, C + 1]}` -> mean probabilities and their argmax."""
    probabilities = _weighted_mean([o["probabilities"] if "probabilities" in o
                                    else tf.nn.softmax(tf.cast(o["logits"], tf.float32)) for o in outputs],
                                   weights)
    return {"probabilities": probabilities,
            "class_map": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}


def average_classification_localization(outputs: Sequence[dict], weights: Sequence[float]) -> dict[str, tf.Tensor]:
    """Members' `{"class_probabilities": [B, C], "box": [B, 4]}` -> their weighted means."""
    return {"class_probabilities": _weighted_mean([o["class_probabilities"] for o in outputs], weights),
            "box": _weighted_mean([o["box"] for o in outputs], weights)}
