"""One example, in numpy: decoded image + record -> augmented, letterboxed, padded arrays.

`ExampleBuilder` is what the tf.data pipeline runs (through `tf.numpy_function`) after
decoding; it is plain numpy so it can be tested and profiled without TensorFlow. Per task
it returns (see `ExampleBuilder.output_dtypes`), with `S = image_size`, `N = max_objects`:

- detection:  image `float32 [S, S, 3]`, boxes `float32 [N, 4]`, classes `int32 [N]`, transform `float32 [5]`
- instance:   the same plus masks `uint8 [N, S, S]` (before the transform)
- semantic:   image, semantic `uint8 [S, S]`, transform
- classification_localization: image, class `int32 []`, box `float32 [4]`, transform

Boxes are xyxy pixels in the letterboxed frame; `transform` is the letterbox of the
(augmented) image, `pipelines.letterbox.LetterboxTransform.as_array()`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detseg.core.contract import (CLASSIFICATION_LOCALIZATION, INSTANCE, PAD_BOX_VALUE, PAD_CLASS, SEMANTIC,
                                  SEMANTIC_BACKGROUND, SEMANTIC_IGNORE, check_task)
from detseg.data.coco import LabelMap
from detseg.data.errors import DatasetError
from detseg.pipelines.augment import AugmentConfig, BoxMaskAugmenter
from detseg.pipelines.batch_contract import semantic_value
from detseg.pipelines.letterbox import letterbox_boxes, letterbox_image, letterbox_masks, letterbox_params
from detseg.pipelines.records import PreparedImage


class ExampleBuilder:
    """Builds the arrays of one example of `task`; safe to call from several threads."""

    def __init__(self, images: list[PreparedImage], label_map: LabelMap, task: str, image_size: int,
                 max_objects: int, augment: AugmentConfig | None = None):
        self.images = images
        self.task = check_task(task)
        self.image_size = int(image_size)
        self.max_objects = int(max_objects)
        enabled = augment is not None and augment.enabled
        self.augmenter = BoxMaskAugmenter(augment, semantic_fill=SEMANTIC_IGNORE) if enabled else None
        self.semantic_lookup = semantic_lookup_table(label_map)

    def output_dtypes(self) -> list[np.dtype]:
        """Dtypes of the arrays `__call__` returns, in order."""
        if self.task == SEMANTIC:
            return [np.float32, np.uint8, np.float32]
        if self.task == CLASSIFICATION_LOCALIZATION:
            return [np.float32, np.int32, np.float32, np.float32]
        dtypes = [np.float32, np.float32, np.int32]
        return dtypes + [np.uint8, np.float32] if self.task == INSTANCE else dtypes + [np.float32]

    def output_shapes(self) -> list[list[int]]:
        """Static shapes matching `output_dtypes`."""
        s, n = self.image_size, self.max_objects
        if self.task == SEMANTIC:
            return [[s, s, 3], [s, s], [5]]
        if self.task == CLASSIFICATION_LOCALIZATION:
            return [[s, s, 3], [], [4], [5]]
        shapes = [[s, s, 3], [n, 4], [n]]
        return shapes + [[n, s, s], [5]] if self.task == INSTANCE else shapes + [[5]]

    def __call__(self, index: int, seed: int, image: np.ndarray) -> list[np.ndarray]:
        """Example `index` of `images` from its decoded `uint8 [H, W, 3]` image."""
        record = self.images[int(index)]
        if image.shape[:2] != (record.height, record.width):
            raise DatasetError(f"{record.path}: decoded image is {image.shape[1]}x{image.shape[0]} "
                               f"but the annotation says {record.width}x{record.height}")
        boxes, classes = record.boxes, record.classes
        masks = instance_masks(record) if self.task == INSTANCE else None
        semantic = self.semantic_target(record) if self.task == SEMANTIC else None
        if self.augmenter is not None:
            out = self.augmenter(image, boxes, int(seed), instance_masks=masks, semantic=semantic)
            image, boxes, classes = out.image, out.boxes, classes[out.kept]
            masks, semantic = out.instance_masks, out.semantic
        transform = letterbox_params(image.shape[0], image.shape[1], self.image_size)
        pixels = letterbox_image(image, transform, self.image_size)
        boxes = letterbox_boxes(boxes, transform)
        if self.task == SEMANTIC:
            labels = letterbox_masks(semantic[None], transform, self.image_size, fill=SEMANTIC_IGNORE)[0]
            return [pixels, labels, transform.as_array()]
        if self.task == CLASSIFICATION_LOCALIZATION:
            largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
            return [pixels, np.int32(classes[largest]), boxes[largest], transform.as_array()]
        padded = [pixels, pad_rows(boxes, self.max_objects, PAD_BOX_VALUE),
                  pad_rows(classes.astype(np.int32), self.max_objects, PAD_CLASS)]
        if self.task == INSTANCE:
            padded.append(pad_rows(letterbox_masks(masks, transform, self.image_size), self.max_objects, 0))
        return padded + [transform.as_array()]

    def semantic_target(self, record: PreparedImage) -> np.ndarray:
        """`uint8 [H, W]` semantic labels of `record` in its original frame."""
        if record.semantic_path is not None:
            return read_semantic_png(record.semantic_path, self.semantic_lookup)
        return render_semantic(record)


def pad_rows(values: np.ndarray, rows: int, fill: float) -> np.ndarray:
    """First axis padded (with `fill`) or cut to `rows`; dtype kept."""
    out = np.full((rows,) + values.shape[1:], fill, values.dtype)
    count = min(rows, values.shape[0])
    out[:count] = values[:count]
    return out


def instance_masks(record: PreparedImage) -> np.ndarray:
    """`uint8 [K, H, W]` 0/1 masks of the record's K target objects (filled box if no segmentation)."""
    if not record.annotations:
        return np.zeros((0, record.height, record.width), np.uint8)
    try:
        return np.stack([a.mask(record.height, record.width) for a in record.annotations])
    except Exception as error:  # a malformed polygon/RLE only shows when decoded
        raise DatasetError(f"{record.path}: cannot decode a segmentation ({error})") from None


def render_semantic(record: PreparedImage) -> np.ndarray:
    """Semantic labels from the instance masks: larger objects first, so small ones stay
    visible where they overlap; crowd regions become `SEMANTIC_IGNORE`."""
    labels = np.full((record.height, record.width), SEMANTIC_BACKGROUND, np.uint8)
    masks = instance_masks(record)
    for k in np.argsort(-masks.sum(axis=(1, 2), dtype=np.int64), kind="stable"):
        labels[masks[k] > 0] = semantic_value(record.classes[k])
    for crowd in record.crowd:
        labels[crowd.mask(record.height, record.width) > 0] = SEMANTIC_IGNORE
    return labels


def semantic_lookup_table(label_map: LabelMap) -> dict[int, int]:
    """PNG value -> target value: 0 -> background, COCO id -> index + 1, 255 -> ignore."""
    table = {SEMANTIC_BACKGROUND: SEMANTIC_BACKGROUND, SEMANTIC_IGNORE: SEMANTIC_IGNORE}
    for index, coco_id in enumerate(label_map.coco_ids):
        table[int(coco_id)] = semantic_value(index)
    return table


def read_semantic_png(path: Path, lookup: dict[int, int]) -> np.ndarray:
    """A semantic mask PNG (value = COCO category id, 0 = background) -> `uint8 [H, W]` targets."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"{path}: cannot read the semantic mask PNG")
    if raw.ndim != 2:
        raise DatasetError(f"{path}: a semantic mask must have one channel, got shape {list(raw.shape)}")
    values = np.unique(raw)
    unknown = [int(v) for v in values if int(v) not in lookup]
    if unknown:
        raise DatasetError(f"{path}: values {unknown[:10]} are neither {SEMANTIC_BACKGROUND}, {SEMANTIC_IGNORE} nor a "
                           f"category id of the dataset "
                           f"{sorted(k for k in lookup if k not in (SEMANTIC_BACKGROUND, SEMANTIC_IGNORE))}")
    table = np.zeros(int(values.max()) + 1, np.uint8)
    for value in values:
        table[int(value)] = lookup[int(value)]
    return table[raw]
