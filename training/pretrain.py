"""`detseg pretrain`: train a backbone as an image classifier, save its weights.

So that transfer learning works with no internet: the backbone learns on local data and
`model.weights: <out>.weights.h5` in a training config starts from it. Two sources:

- a COCO instances JSON (the synthetic dataset included): every non-crowd object is cut
  out (its box grown by `CROP_MARGIN` of its size on each side, clipped to the image)
  and resized to `image_size` x `image_size`; its category is the label. In training each
  side grows by a random margin in `[CROP_MARGIN, MAX_CONTEXT_MARGIN]` instead (random
  scale and position, like random-resized crops): a backbone that only ever saw objects
  filling the frame learns features, and BatchNorm statistics, that do not carry over to
  whole images where objects are small and background dominates;
- a folder per class: `<root>/<class name>/*.png|jpg|...`; whole images, resized.

Resizing squashes to a square (no letterbox): crops are small and near-square, and the
classifier only needs to learn features. Training augments with random horizontal flips
and brightness, seeded. A fixed `VAL_FRACTION` of samples is held out to report accuracy.
Beside the weights, `<out stem>.json` records the backbone, image size, classes and
accuracy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from detseg.core.atomic_files import write_file_atomic, write_text_atomic
from detseg.data.coco import load_coco
from detseg.data.errors import DatasetError
from detseg.models.backbones.weights import SAVED_WEIGHTS_SUFFIX
from detseg.models.backbones.registry import build_backbone
from detseg.models.clsloc.classification_localization import build_classifier
from detseg.models.task_model import build_optimizer_slots

CROP_MARGIN = 0.1
MAX_CONTEXT_MARGIN = 0.5  # training crops: up to half the object size of context on a side
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
BRIGHTNESS_DELTA = 25.0  # pixels (0..255 scale)


@dataclass(frozen=True)
class ClassificationSamples:
    """`paths[i]`, object box `boxes[i]` (float32 yxyx normalized to the image, 0..1) and label.

    The box is the object's tight box (the whole image for folder-per-class samples);
    `sample_batches` grows it by the crop margin.
    """

    paths: tuple[str, ...]
    boxes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def take(self, indices: np.ndarray) -> "ClassificationSamples":
        return ClassificationSamples(tuple(self.paths[i] for i in indices), self.boxes[indices],
                                     self.labels[indices], self.class_names)


@dataclass(frozen=True)
class PretrainResult:
    weights_path: Path
    num_samples: int
    class_names: tuple[str, ...]
    train_accuracy: float
    val_accuracy: float | None


def crops_from_coco(annotations: str | os.PathLike, image_dir: str | os.PathLike | None = None
                    ) -> ClassificationSamples:
    """One sample per non-crowd object of a COCO file: its tight box."""
    dataset = load_coco(annotations, image_dir)
    label_map = dataset.label_map
    paths, boxes, labels = [], [], []
    for record in dataset.images:
        for annotation in record.annotations:
            x, y, w, h = annotation.bbox
            if annotation.iscrowd or w <= 0 or h <= 0:
                continue
            paths.append(str(dataset.image_path(record)))
            boxes.append((y / record.height, x / record.width, (y + h) / record.height,
                          (x + w) / record.width))
            labels.append(label_map.index_of(annotation.category_id))
    if not paths:
        raise DatasetError(f"{annotations}: no non-crowd objects to cut crops from")
    return ClassificationSamples(tuple(paths), np.array(boxes, np.float32).reshape(-1, 4),
                                 np.array(labels, np.int32), label_map.names)


def images_from_class_folders(root: str | os.PathLike) -> ClassificationSamples:
    """Whole images from `<root>/<class>/<image>`; classes are the sorted folder names."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [index] * len(files)
    if len(classes) < 2 or not paths:
        raise DatasetError(f"{root}: a folder-per-class image set needs at least 2 class folders "
                           f"holding {'/'.join(IMAGE_SUFFIXES)} images (found {len(classes)} folders, "
                           f"{len(paths)} images)")
    full = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (len(paths), 1))
    return ClassificationSamples(tuple(paths), full, np.array(labels, np.int32), tuple(classes))


def load_samples(data: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> ClassificationSamples:
    """A COCO JSON file -> object crops; a folder -> folder-per-class images."""
    path = Path(data)
    if path.is_dir():
        return images_from_class_folders(path)
    if path.is_file():
        return crops_from_coco(path, image_dir)
    raise DatasetError(f"{path}: not found (expected a COCO JSON file or a folder per class)")


def sample_batches(samples: ClassificationSamples, image_size: int, batch_size: int,
                   training: bool, seed: int) -> tf.data.Dataset:
    """`(pixels float32 [B, S, S, 3] 0..255, label int32 [B])`, augmented when `training`."""
    elements = tf.data.Dataset.from_tensor_slices((list(samples.paths), samples.boxes, samples.labels))
    if training:
        elements = elements.shuffle(len(samples.paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    size = [image_size, image_size]

    def load(element, pair):
        path, box, label = element
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        margins = (tf.random.stateless_uniform([4], pair + 2, CROP_MARGIN, MAX_CONTEXT_MARGIN)
                   if training else tf.fill([4], CROP_MARGIN))
        crop_box = grown_box(box, margins)
        crop = tf.image.crop_and_resize(image[None], crop_box[None], [0], size)[0]
        if training:
            crop = tf.image.stateless_random_flip_left_right(crop, pair)
            crop = tf.image.stateless_random_brightness(crop, BRIGHTNESS_DELTA, pair + 1)
            crop = tf.clip_by_value(crop, 0.0, 255.0)
        return crop, label

    options = tf.data.Options()
    options.autotune.enabled = False  # see pipelines.dataset: AUTOTUNE tear-down stalls small CPUs
    batches = tf.data.Dataset.zip(elements, seeds).map(load, num_parallel_calls=2, deterministic=True)
    return batches.batch(batch_size).prefetch(2).with_options(options)


def grown_box(box, margins):
    """yxyx `[4]` normalized box grown by `margins` `[4]` (top, left, bottom, right) of its
    height/width on each side, clipped to the image (0..1)."""
    height, width = box[2] - box[0], box[3] - box[1]
    grow = margins * tf.stack([height, width, height, width])
    return tf.clip_by_value(box + tf.constant([-1.0, -1.0, 1.0, 1.0]) * grow, 0.0, 1.0)


def split_samples(samples: ClassificationSamples, seed: int) -> tuple[ClassificationSamples, ClassificationSamples | None]:
    order = np.random.default_rng(seed).permutation(len(samples.paths))
    held_out = int(round(len(order) * VAL_FRACTION))
    if held_out == 0 or held_out == len(order):
        return samples, None
    return samples.take(np.sort(order[held_out:])), samples.take(np.sort(order[:held_out]))


def pretrain_backbone(data: str | os.PathLike, backbone_name: str, image_size: int, epochs: int,
                      out: str | os.PathLike, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                      image_dir: str | os.PathLike | None = None, alpha: float = 1.0, verbose: int = 2,
                      log: Callable[[str], None] = print) -> PretrainResult:
    """Trains `backbone_name` + a softmax classifier on `data`; saves the backbone to `out`."""
    out = Path(out)
    if not out.name.endswith(SAVED_WEIGHTS_SUFFIX):
        raise ValueError(f"--out {out}: the file name must end with '{SAVED_WEIGHTS_SUFFIX}'")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    keras.utils.set_random_seed(seed)
    samples = load_samples(data, image_dir)
    train, val = split_samples(samples, seed)
    log(f"pretrain: {len(train.paths)} train / {len(val.paths) if val else 0} val samples, "
        f"{len(samples.class_names)} classes {list(samples.class_names)}")
    backbone = build_backbone(backbone_name, (image_size, image_size), None, alpha=alpha)
    classifier = build_classifier(backbone, len(samples.class_names))
    classifier.compile(keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    build_optimizer_slots(classifier)
    val_batches = sample_batches(val, image_size, batch_size, False, seed) if val else None
    history = classifier.fit(sample_batches(train, image_size, batch_size, True, seed),
                             validation_data=val_batches, epochs=epochs, verbose=verbose)
    write_file_atomic(out, backbone.save_weights)
    val_accuracy = float(history.history["val_accuracy"][-1]) if val else None
    result = PretrainResult(out, len(samples.paths), samples.class_names,
                            float(history.history["accuracy"][-1]), val_accuracy)
    _write_description(result, backbone_name, image_size, alpha, data)
    return result


def _write_description(result: PretrainResult, backbone_name: str, image_size: int, alpha: float,
                       data) -> None:
    path = result.weights_path.with_name(result.weights_path.name[:-len(SAVED_WEIGHTS_SUFFIX)] + ".json")
    write_text_atomic(json.dumps({
        "backbone": backbone_name, "alpha": alpha, "image_size": image_size, "data": str(data),
        "classes": list(result.class_names), "num_samples": result.num_samples,
        "train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy,
    }, indent=2), path)
