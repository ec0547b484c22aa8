"""The tf.data input pipelines: `CocoDataset` records -> batches of the batch contract.

`build_dataset` makes training (and validation-loss) batches `(x, y)`;
`build_eval_dataset` makes evaluation batches `(x, meta)` (or `(x, y, meta)`) in a fixed
order, with the last batch padded to the full batch size and flagged in `meta["valid"]`.
See `pipelines.batch_contract` for `x` and `y`.

Per element: index -> read + `tf.io.decode_image` (TF ops, parallel, outside the GIL) ->
`ExampleBuilder` in a `tf.numpy_function` (augment, letterbox, pad) -> batch -> prefetch(2).
Files and annotations are checked up front (`pipelines.records.prepare_images`), so a bad
file is named before training starts rather than failing anonymously inside tf.data.

AUTOTUNE is off on purpose: on small CPUs its tear-down stalls every iterator (each `fit`
epoch, each `predict`) for 10-30 s; explicit `num_parallel_calls` and `prefetch(2)` do not.
Augmentation seeds come from `tf.data.Dataset.random(seed)`, re-drawn each epoch: the same
`seed` gives the same batches, epoch after epoch, in every run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from detseg.core.contract import (CLASSIFICATION_LOCALIZATION, INSTANCE, PAD_BOX_VALUE, PAD_CLASS, PAD_PIXEL_VALUE,
                                  SEMANTIC, SEMANTIC_IGNORE, TRANSFORM_SIZE, check_task)
from detseg.data.coco import CocoDataset
from detseg.data.errors import DatasetError
from detseg.pipelines.augment import AugmentConfig
from detseg.pipelines.example import ExampleBuilder
from detseg.pipelines.records import PreparedImage, PreparedImages, prepare_images

logger = logging.getLogger(__name__)

PAD_IMAGE_ID = -1  # meta["image_id"] of the padding examples that fill the last eval batch
PREFETCH_BATCHES = 2


def build_dataset(dataset: CocoDataset, task: str, image_size: int, batch_size: int,
                  augment: AugmentConfig | None = None, shuffle: bool = False, seed: int = 0,
                  max_objects: int = 50, skip_invalid: bool = False, repeat: bool = False,
                  num_parallel_calls: int = 2, drop_remainder: bool = False) -> tf.data.Dataset:
    """Training batches `(x, y)` of `task` (see `pipelines.batch_contract`).

    `augment=None` or `AugmentConfig.off()` does no augmentation. `shuffle` re-shuffles
    every epoch (deterministically from `seed`). Bad files/annotations raise `DatasetError`
    naming them, or with `skip_invalid=True` are skipped and listed in a logged summary.
    Without `repeat`, `dataset.cardinality()` is the number of batches in an epoch.
    """
    _check_sizes(image_size, batch_size, num_parallel_calls)
    prepared = _prepare(dataset, task, max_objects, skip_invalid)
    batched = _batcher(dataset, prepared, task, image_size, batch_size, max_objects, augment,
                       num_parallel_calls, drop_remainder)
    batches = batched(_epoch_elements(len(prepared.images), shuffle, seed, repeat))
    return batches.prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


@dataclass(frozen=True)
class TrainingPasses:
    """Endless training passes over a prepared dataset; `from_pass(k)` starts at pass k.

    Each pass's order and augmentation draws are a function of `(seed, pass number)`
    alone, and batches never straddle two passes. So a run resumed at epoch k asks for
    the passes after k and gets exactly the batches an uninterrupted run got there
    (`build_dataset`'s per-iteration reshuffle restarts with every new process).
    """

    steps_per_pass: int
    num_images: int
    shuffle: bool
    seed: int
    batched: Callable[[tf.data.Dataset], tf.data.Dataset]

    def from_pass(self, first_pass: int) -> tf.data.Dataset:
        passes = tf.data.Dataset.counter(int(first_pass))
        batches = passes.flat_map(
            lambda number: self.batched(_pass_elements(self.num_images, self.shuffle, self.seed, number)))
        return batches.prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


def build_training_passes(dataset: CocoDataset, task: str, image_size: int, batch_size: int,
                          augment: AugmentConfig | None = None, shuffle: bool = True, seed: int = 0,
                          max_objects: int = 50, skip_invalid: bool = False,
                          num_parallel_calls: int = 2) -> TrainingPasses:
    """`TrainingPasses` of `task` batches (`(x, y)` as `build_dataset`), images checked once."""
    _check_sizes(image_size, batch_size, num_parallel_calls)
    prepared = _prepare(dataset, task, max_objects, skip_invalid)
    batched = _batcher(dataset, prepared, task, image_size, batch_size, max_objects, augment,
                       num_parallel_calls, drop_remainder=False)
    num_images = len(prepared.images)
    return TrainingPasses(-(-num_images // batch_size), num_images, shuffle, seed, batched)


def _batcher(dataset: CocoDataset, prepared: PreparedImages, task: str, image_size: int, batch_size: int,
             max_objects: int, augment: AugmentConfig | None, num_parallel_calls: int, drop_remainder: bool):
    """`(index, element seed)` elements -> `(x, y)` batches of the prepared images."""
    builder = ExampleBuilder(prepared.images, dataset.label_map, task, image_size, max_objects, augment)

    def batched(elements: tf.data.Dataset) -> tf.data.Dataset:
        examples = _built_examples(elements, prepared.images, builder, num_parallel_calls)
        return examples.map(lambda index, x, y, transform: (x, y)).batch(batch_size, drop_remainder=drop_remainder)

    return batched


def build_eval_dataset(dataset: CocoDataset, task: str, image_size: int, batch_size: int,
                       max_objects: int = 50, skip_invalid: bool = False, with_targets: bool = False,
                       num_parallel_calls: int = 2) -> tf.data.Dataset:
    """Evaluation batches `(x, meta)`, or `(x, y, meta)` with `with_targets=True`.

    No augmentation, no shuffle, the dataset's image order. Every batch has exactly
    `batch_size` examples (a partial last batch would make `model.predict` retrace): the
    last one is filled with padding examples whose `meta["valid"]` is False. `meta`:
    - `"image_id"`: `int64 [B]` COCO image id (`PAD_IMAGE_ID` on padding)
    - `"original_size"`: `int32 [B, 2]` (height, width) of the original image
    - `"letterbox"`: `float32 [B, 5]` transform, for `boxes_to_original` / `masks_to_original`
    - `"valid"`: `bool [B]`
    Do not hand the 3-tuple to `model.evaluate`: Keras would read `meta` as sample weights.
    """
    _check_sizes(image_size, batch_size, num_parallel_calls)
    prepared = _prepare(dataset, task, max_objects, skip_invalid)
    builder = ExampleBuilder(prepared.images, dataset.label_map, task, image_size, max_objects, None)
    image_ids = tf.constant([i.image_id for i in prepared.images], tf.int64)
    sizes = tf.constant([[i.height, i.width] for i in prepared.images], tf.int32)

    def with_meta(index, x, y, transform):
        meta = {"image_id": tf.gather(image_ids, index), "original_size": tf.gather(sizes, index),
                "letterbox": transform, "valid": tf.constant(True)}
        return x, y, meta

    in_order = _epoch_elements(len(prepared.images), shuffle=False, seed=0, repeat=False)
    elements = _built_examples(in_order, prepared.images, builder, num_parallel_calls).map(with_meta)
    padding = -len(prepared.images) % batch_size
    if padding:
        elements = elements.concatenate(tf.data.Dataset.from_tensors(
            _padding_example(task, image_size, max_objects)).repeat(padding))
    batches = elements.map(lambda x, y, meta: (x, y, meta) if with_targets else (x, meta))
    batches = batches.batch(batch_size, drop_remainder=True).prefetch(PREFETCH_BATCHES)
    return batches.with_options(pipeline_options())


def pipeline_options() -> tf.data.Options:
    """Deterministic order, AUTOTUNE off (see the module docstring)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    return options


def _check_sizes(image_size: int, batch_size: int, num_parallel_calls: int) -> None:
    for name, value in (("image_size", image_size), ("batch_size", batch_size),
                        ("num_parallel_calls", num_parallel_calls)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


# What was left out of which file, said once per process: a run builds the same split's
# pipeline several times (features, fine-tuning, evaluation).
_SUMMARIES_SAID: set[tuple[str, str]] = set()


def _prepare(dataset: CocoDataset, task: str, max_objects: int, skip_invalid: bool) -> PreparedImages:
    prepared = prepare_images(dataset, check_task(task), max_objects, skip_invalid)
    source = dataset.source or dataset.image_dir
    summary = prepared.summary()
    if summary and (str(source), summary) not in _SUMMARIES_SAID:
        _SUMMARIES_SAID.add((str(source), summary))
        logger.warning("%s: %s", source, summary.replace("\n", "; "))
    if not prepared.images:
        raise DatasetError(f"{source}: no usable images for task {task!r}"
                           + (f" ({summary})" if summary else ""))
    logger.info("%s: %d images for task %s", source, len(prepared.images), task)
    return prepared


def _epoch_elements(num_images: int, shuffle: bool, seed: int, repeat: bool) -> tf.data.Dataset:
    """`(index, element seed)` pairs; each new iteration reshuffles and redraws (tf.data's counters)."""
    indices = tf.data.Dataset.range(num_images)
    if shuffle:
        indices = indices.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    elements = tf.data.Dataset.zip(indices, seeds)
    return elements.repeat() if repeat else elements


def _pass_elements(num_images: int, shuffle: bool, seed: int, number: tf.Tensor) -> tf.data.Dataset:
    """`(index, element seed)` pairs of pass `number`: a function of `(seed, number)` alone."""
    order_key = tf.stack([tf.constant(seed, tf.int64), 2 * number])
    draws_key = tf.stack([tf.constant(seed, tf.int64), 2 * number + 1])
    indices = tf.range(num_images, dtype=tf.int64)
    if shuffle:
        indices = tf.random.experimental.stateless_shuffle(indices, seed=order_key)
    seeds = tf.random.stateless_uniform([num_images], seed=draws_key, minval=0, maxval=2**62, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((indices, seeds))


def _built_examples(elements: tf.data.Dataset, images: list[PreparedImage], builder: ExampleBuilder,
                    num_parallel_calls: int) -> tf.data.Dataset:
    """Unbatched `(index, x, y, transform)` from `(index, element seed)`, `index` into `images`."""
    paths = tf.constant([str(i.path) for i in images])
    dtypes, shapes = builder.output_dtypes(), builder.output_shapes()

    def build(index, element_seed):
        image = tf.io.decode_image(tf.io.read_file(tf.gather(paths, index)), channels=3,
                                   expand_animations=False, dtype=tf.uint8)
        arrays = tf.numpy_function(builder, [index, element_seed, image], [tf.as_dtype(d) for d in dtypes],
                                   stateful=False)
        arrays = [tf.ensure_shape(a, s) for a, s in zip(arrays, shapes)]
        return (index,) + _contract_structure(builder.task, arrays)

    return elements.map(build, num_parallel_calls=num_parallel_calls, deterministic=True)


def _contract_structure(task: str, arrays: list[tf.Tensor]) -> tuple:
    """Builder arrays -> `(x, y, transform)` with `y` shaped as the batch contract says."""
    if task == SEMANTIC:
        x, labels, transform = arrays
        return x, labels, transform
    if task == CLASSIFICATION_LOCALIZATION:
        x, label, box, transform = arrays
        return x, {"class": label, "box": box}, transform
    if task == INSTANCE:
        x, boxes, classes, masks, transform = arrays
        return x, {"boxes": boxes, "classes": classes, "masks": masks}, transform
    x, boxes, classes, transform = arrays
    return x, {"boxes": boxes, "classes": classes}, transform


def _padding_example(task: str, image_size: int, max_objects: int) -> tuple:
    """`(x, y, meta)` of one padding example: a blank canvas, padding targets, valid=False."""
    s, n = image_size, max_objects
    x = tf.fill([s, s, 3], tf.constant(PAD_PIXEL_VALUE, tf.float32))
    if task == SEMANTIC:
        y = tf.fill([s, s], tf.constant(SEMANTIC_IGNORE, tf.uint8))
    elif task == CLASSIFICATION_LOCALIZATION:
        y = {"class": tf.constant(PAD_CLASS, tf.int32), "box": tf.fill([4], PAD_BOX_VALUE)}
    else:
        y = {"boxes": tf.fill([n, 4], PAD_BOX_VALUE), "classes": tf.fill([n], tf.constant(PAD_CLASS, tf.int32))}
        if task == INSTANCE:
            y["masks"] = tf.zeros([n, s, s], tf.uint8)
    # An identity letterbox (scale 1, no padding), so mapping padding back never divides by 0.
    identity = np.array([1.0, 0.0, 0.0, s, s], np.float32)[:TRANSFORM_SIZE]
    meta = {"image_id": tf.constant(PAD_IMAGE_ID, tf.int64), "original_size": tf.constant([s, s], tf.int32),
            "letterbox": tf.constant(identity), "valid": tf.constant(False)}
    return x, y, meta
