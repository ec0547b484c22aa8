"""The exportable module: decode -> letterbox -> model -> back to original pixels, all in-graph.

`ServingModule` wraps any `infer(pixels float32 [B, S, S, 3] in 0..255) -> dict` (a Keras
model, a `tf.Module`, or a `tf.function`) whose outputs live in the `S x S` letterbox
frame (see `models.ops.letterbox` for the transform and `serving.task_outputs` for what
each task must return and what it serves). It has two signatures:

    serving_default(images: tf.string [None])          encoded PNG/JPEG/BMP/GIF (first frame),
                                                       each of its own size
    serving_pixels(pixels: tf.uint8 [None, None, None, 3])   a batch of same-size RGB images

`serving_module_for(model, task, image_size, class_names)` wraps any detseg task model:
every family's `predict_step` returns the decoded prediction dict this module serves, so
no family needs its own adapter.

Both signatures return the same outputs (`serving.task_outputs`), in original image pixels. Label
names are written to `labels.txt`, carried as a SavedModel asset, and looked up in-graph
to produce `class_names`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from detseg.core.contract import BACKGROUND_NAME, SEMANTIC
from detseg.models.ops.letterbox import TRANSFORM_KEYS, letterbox_image, letterbox_images, letterbox_transform
from detseg.serving.task_outputs import TASKS, served_outputs

DEFAULT_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
LABELS_FILENAME = "labels.txt"


class ServingModuleError(ValueError):
    """The arguments cannot make a serving module; the message says which and why."""


def _check_label_names(label_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in label_names]
    if not names:
        raise ServingModuleError("label_names is empty: a served model needs at least one class name")
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ServingModuleError(f"label names may not contain line breaks (one per line in "
                                 f"{LABELS_FILENAME}): {bad[:3]}")
    return names


def decode_and_letterbox(images: tf.Tensor, size: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Encoded images `tf.string [B]` (JPEG, PNG, BMP, GIF; any sizes) -> letterboxed pixels
    `float32 [B, size, size, 3]` and their transforms (`models.ops.letterbox.letterbox_transform`)."""
    def decode_and_frame(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        framed, _ = letterbox_image(image, size)
        return framed, tf.shape(image)[:2]

    pixels, sizes = tf.map_fn(
        decode_and_frame, images,
        fn_output_signature=(tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([2], tf.int32)))
    return pixels, letterbox_transform(sizes[:, 0], sizes[:, 1], size)


class ServingModule(tf.Module):
    """A `tf.Module` with `serving_default` (encoded images) and `serving_pixels` (uint8 pixels).

    Args:
      infer: `pixels float32 [B, S, S, 3] (0..255) -> dict of batched tensors` in the frame.
      task: one of `serving.task_outputs.TASKS` (the `detseg.core.contract` task names).
      letterbox: S, the square model size used in training (`models.ops.letterbox`).
      label_names: class index -> name, in index order (`LabelMap.names`).
      trackables: objects holding variables that a plain-function `infer` uses, so the
        SavedModel saves them (not needed when `infer` is a Keras model or `tf.Module`). A
        list of variables is enough, and saves faster than the Keras model that holds them
        (`serving_module_for`): the save then need not walk every layer.

    Both signatures call one traced `serve_frame(pixels float32 [B, S, S, 3], transforms
    {key: float32 [B]}) -> served outputs`, so the model is traced (and stored) once.
    """

    def __init__(self, infer: Callable[[tf.Tensor], dict[str, Any]], *, task: str,
                 letterbox: int, label_names: Sequence[str],
                 trackables: Sequence[Any] = (), name: str = "detseg_serving"):
        super().__init__(name=name)
        if task not in TASKS:
            raise ServingModuleError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.letterbox_size = int(letterbox)
        if self.letterbox_size < 1:
            raise ServingModuleError(f"letterbox size must be a positive number of pixels, got {letterbox}")
        self.label_names = _check_label_names(label_names)
        self.infer = infer
        self.trackables = list(trackables)
        self._labels_dir = tempfile.TemporaryDirectory(prefix="detseg-labels-")
        labels_path = Path(self._labels_dir.name) / LABELS_FILENAME
        labels_path.write_text("\n".join(self.label_names) + "\n", encoding="utf-8")
        self.labels_asset = tf.saved_model.Asset(str(labels_path))
        initializer = tf.lookup.TextFileInitializer(
            self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
        self.label_table = tf.lookup.StaticHashTable(initializer, default_value="")
        size = self.letterbox_size
        self.serve_frame = tf.function(
            self._serve, autograph=False,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32),
                             {key: tf.TensorSpec([None], tf.float32) for key in TRANSFORM_KEYS}])

    def _label_lookup(self, classes: tf.Tensor) -> tf.Tensor:
        return self.label_table.lookup(tf.cast(classes, tf.int64))

    def _run_model(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        if isinstance(self.infer, keras.Layer):
            return self.infer(pixels, training=False)
        return self.infer(pixels)

    def _serve(self, pixels: tf.Tensor, transforms: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        raw = self._run_model(pixels)
        return served_outputs(self.task, raw, transforms, self.letterbox_size,
                              self._label_lookup, len(self.label_names))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)], autograph=False)
    def serving_default(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images `tf.string [B]` -> served outputs (see `serving.task_outputs`)."""
        return self.serve_frame(*decode_and_letterbox(images, self.letterbox_size))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS_INPUT)], autograph=False)
    def serving_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Same-size RGB images `uint8 [B, H, W, 3]` -> served outputs."""
        framed, transforms = letterbox_images(pixels, self.letterbox_size)
        return self.serve_frame(framed, transforms)

    def signatures(self) -> dict[str, Any]:
        """The signature map for `tf.saved_model.save`: the `tf.function`s, not concrete
        functions, so that they are traced once, inside the save (a function traced
        before `save` is traced again there: the save context is part of the trace key)."""
        return {DEFAULT_SIGNATURE: self.serving_default, PIXELS_SIGNATURE: self.serving_pixels}


def serving_module_for(model: keras.Model, task: str, image_size: int,
                       class_names: Sequence[str]) -> ServingModule:
    """The `ServingModule` of a detseg task model trained on `task` at `image_size`.

    Serves `model.predict_step`: every task model (`detseg.models.TaskModel`) returns from it
    the decoded predictions of its task in the letterbox frame, under the names
    `serving.task_outputs` reads. Semantic models get `BACKGROUND_NAME` as label 0 (class-map
    value 0 is background; class index i is map value i + 1).
    """
    if task not in TASKS:
        raise ServingModuleError(f"task must be one of {TASKS}, got {task!r}")

    def infer(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return model.predict_step(pixels)

    labels = [BACKGROUND_NAME, *class_names] if task == SEMANTIC else list(class_names)
    return ServingModule(infer, task=task, letterbox=image_size, label_names=labels,
                         trackables=[list(model.variables)])
