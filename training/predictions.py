"""An in-memory Keras model -> per-image predictions in ORIGINAL pixels, via the eval pipeline.

    for image_id, prediction in model_predictions(model, dataset, task, image_size=128):
        ...   # what `evaluation.task_evaluation.evaluate_task_predictions` takes

Works for every family: the images go through `pipelines.build_eval_dataset` (the same
letterbox as training), the model runs through its `predict_step` (what `model.predict`
returns: decoded detections after NMS, class maps, class probabilities and a box), and
the outputs, which live in the `S x S` letterbox frame, are mapped back to each image's
own pixels with the transform the pipeline recorded. What a model's `predict_step` must
return, by task (batched, frame pixels):

- detection: `boxes` `[B, K, 4]` xyxy, `scores` `[B, K]`, `classes` `[B, K]` (`PAD_CLASS`
  on padding), optional `num_detections` `[B]`; instance also `masks` `[B, K, S, S]`
  (probabilities or 0/1).
- semantic: `logits` and/or `probabilities` `[B, S, S, C + 1]` and/or `class_map` `[B, S, S]` (0 background).
- classification_localization: `class_probabilities` `[B, C]`, `box` `[B, 4]`.

Probabilities are resampled bilinearly to the original size before the argmax or the
0.5 threshold by the exported graph's own functions (`models.ops.letterbox`), so the
in-memory, SavedModel and served numbers agree. `eval_targets` gives the matching
per-image truth for the semantic and cls+loc metrics, from the same records the pipeline
reads.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from detseg.data.coco import CocoDataset
from detseg.models.ops.letterbox import (boxes_to_original, dense_to_original, masks_to_original,
                                         transform_from_vector, vector_frame_size)
from detseg.core.contract import CLASSIFICATION_LOCALIZATION, INSTANCE, SEMANTIC, SEMANTIC_SCORE_OUTPUTS, check_task
from detseg.pipelines.dataset import build_eval_dataset
from detseg.pipelines.example import read_semantic_png, render_semantic, semantic_lookup_table
from detseg.pipelines.records import prepare_images

DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_OBJECTS = 100  # detections are not capped by this; only ground truth rows are

FramePredict = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def compiled_predict(model: keras.Model) -> FramePredict:
    """`model.predict_step` as one graph function (traced once per batch shape)."""
    return tf.function(model.predict_step, reduce_retracing=True)


def model_predictions(model: keras.Model, dataset: CocoDataset, task: str, image_size: int,
                      batch_size: int = DEFAULT_BATCH_SIZE, max_objects: int = DEFAULT_MAX_OBJECTS,
                      skip_invalid: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(image_id, prediction)` for every image the eval pipeline reads, in dataset order.

    `model` takes raw pixels `[B, image_size, image_size, 3]`. cls+loc skips images
    without objects, as its pipeline does. Bad files raise `DatasetError` naming them
    (or, with `skip_invalid`, are left out).
    """
    batches = build_eval_dataset(dataset, task, image_size, batch_size, max_objects=max_objects,
                                 skip_invalid=skip_invalid)
    return batch_predictions(compiled_predict(model), batches, task)


def batch_predictions(predict: FramePredict, batches: tf.data.Dataset,
                      task: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run `predict` over `build_eval_dataset` batches `(x, meta)` (or `(x, y, meta)`).

    Padding examples (`meta["valid"]` False) are dropped; each valid row is mapped to its
    original image by `frame_to_original`.
    """
    check_task(task)
    for batch in batches:
        x, meta = batch[0], batch[-1]
        outputs = {name: np.asarray(value) for name, value in predict(x).items()}
        image_ids = meta["image_id"].numpy()
        transforms = meta["letterbox"].numpy()
        for row in np.flatnonzero(meta["valid"].numpy()):
            yield int(image_ids[row]), frame_to_original(task, outputs, int(row), transforms[row])


def frame_to_original(task: str, outputs: Mapping[str, np.ndarray], row: int,
                      transform: np.ndarray) -> dict[str, Any]:
    """Row `row` of a batch of frame outputs -> one image's prediction in original pixels.

    `transform` is that image's `float32 [5]` letterbox vector. Returns the prediction
    contract of `evaluation.task_evaluation` for `task`. The mapping runs the exported
    graph's own functions (`models.ops.letterbox`, on this one image), so it gives what
    the SavedModel serves.
    """
    vector = tf.constant(transform, tf.float32)
    if task == SEMANTIC:
        return {"class_map": _class_map_to_original(outputs, row, vector)}
    if task == CLASSIFICATION_LOCALIZATION:
        if "class_probabilities" not in outputs:
            raise KeyError(f"a {task} model's predict_step must return 'class_probabilities'; "
                           f"it returned {sorted(outputs)}")
        probabilities = outputs["class_probabilities"][row]
        box = _boxes_back(outputs["box"][row][None, :], vector).numpy()[0]
        return {"class": int(np.argmax(probabilities)), "score": float(np.max(probabilities)), "box": box}
    count = outputs["boxes"].shape[1]
    if "num_detections" in outputs:
        count = min(count, int(outputs["num_detections"][row]))
    prediction = {"boxes": _boxes_back(outputs["boxes"][row, :count], vector).numpy(),
                  "scores": outputs["scores"][row, :count].astype(np.float32),
                  "classes": outputs["classes"][row, :count].astype(np.int64)}
    if task == INSTANCE:
        prediction["masks"] = _masks_back(outputs["masks"][row, :count], vector).numpy()
    return prediction


def _class_map_to_original(outputs: Mapping[str, np.ndarray], row: int, vector: tf.Tensor) -> np.ndarray:
    """`int32 [H, W]`: the first of `SEMANTIC_SCORE_OUTPUTS` present resampled bilinearly then
    argmax (as the export does), else class ids (nearest)."""
    for scores in SEMANTIC_SCORE_OUTPUTS:
        if scores in outputs:
            return _class_map_back(outputs[scores][row], vector).numpy()
    if "class_map" not in outputs:
        raise KeyError(f"a semantic model's predict_step must return 'logits', 'probabilities' or "
                       f"'class_map'; it returned {sorted(outputs)}")
    return _class_ids_back(outputs["class_map"][row], vector).numpy()


# One image at a time, as graphs (eager op dispatch would cost ~20 ms per image); shapes
# vary per image, so each traces at most a few times (`reduce_retracing`).


@tf.function(reduce_retracing=True)
def _boxes_back(boxes: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
    return boxes_to_original(boxes, vector)


@tf.function(reduce_retracing=True)
def _masks_back(masks: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
    return masks_to_original(masks, vector, vector_frame_size(vector))


def _dense_back(dense: tf.Tensor, vector: tf.Tensor, method: str) -> tf.Tensor:
    transform = transform_from_vector(vector)
    height, width = tf.cast(transform["height"], tf.int32), tf.cast(transform["width"], tf.int32)
    return dense_to_original(dense, transform, vector_frame_size(vector), height, width, method)


@tf.function(reduce_retracing=True)
def _class_map_back(probabilities: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
    return tf.argmax(_dense_back(probabilities, vector, "bilinear"), axis=-1, output_type=tf.int32)


@tf.function(reduce_retracing=True)
def _class_ids_back(class_map: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
    return _dense_back(tf.cast(class_map, tf.int32)[..., tf.newaxis], vector, "nearest")[..., 0]


# ---------------------------------------------------------------------------- ground truth


def eval_targets(dataset: CocoDataset, task: str, max_objects: int = DEFAULT_MAX_OBJECTS,
                 skip_invalid: bool = False) -> Mapping[int, Any] | None:
    """The per-image truth in original pixels that semantic and cls+loc metrics need.

    semantic: `{image_id: uint8 [H, W]}` (0 background, `i + 1` class `i`, 255 ignore),
    from the dataset's mask PNGs or rendered from its instances, read when asked for.
    classification_localization: `{image_id: (class index, box [4] xyxy)}` of each
    image's largest object (images without objects are absent). detection / instance:
    None (COCO evaluation reads the annotations itself).
    """
    check_task(task)
    if task not in (SEMANTIC, CLASSIFICATION_LOCALIZATION):
        return None
    prepared = prepare_images(dataset, task, max_objects, skip_invalid, check_files=False).images
    if task == CLASSIFICATION_LOCALIZATION:
        truths = {}
        for record in prepared:
            areas = (record.boxes[:, 2] - record.boxes[:, 0]) * (record.boxes[:, 3] - record.boxes[:, 1])
            largest = int(np.argmax(areas))  # the pipeline's rule: the first of the largest
            truths[record.image_id] = (int(record.classes[largest]), record.boxes[largest])
        return truths
    return SemanticTargets({record.image_id: record for record in prepared},
                           semantic_lookup_table(dataset.label_map))


class SemanticTargets(Mapping):
    """`image_id -> uint8 [H, W]` semantic labels, each read or rendered when looked up
    (a whole dataset's label maps would not fit in memory)."""

    def __init__(self, records: Mapping[int, Any], lookup: Mapping[int, int]):
        self.records = records
        self.lookup = lookup

    def __getitem__(self, image_id: int) -> np.ndarray:
        record = self.records[image_id]
        if record.semantic_path is not None:
            return read_semantic_png(record.semantic_path, dict(self.lookup))
        return render_semantic(record)

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)
