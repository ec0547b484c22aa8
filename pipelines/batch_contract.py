"""The batch contract between `pipelines` and `models`: what `(x, y)` holds, and its specs.

The task names and label codes below are defined in `detseg.core.contract`.

Every training batch is Keras-style `(x, y)`:

- `x`: `float32 [B, S, S, 3]`, RGB pixels in 0..255, letterboxed to the square model size
  `S` (NOT normalized: normalization is the model's first layer).
- `y` by task:
  - `"detection"`: `{"boxes": float32 [B, N, 4], "classes": int32 [B, N]}`; boxes are xyxy
    pixels in the letterboxed `S x S` frame; rows past the image's objects hold
    `PAD_BOX_VALUE` (all four coordinates) and `PAD_CLASS`. `N` is `max_objects`.
  - `"instance"`: the detection dict plus `"masks": uint8 [B, N, S, S]` of 0/1, one mask per
    box row (all zero on padding rows).
  - `"semantic"`: `uint8 [B, S, S]` with `SEMANTIC_BACKGROUND` (0) for background,
    `class index + 1` (1..C) for class pixels, and `SEMANTIC_IGNORE` (255) where the loss and
    metrics must not look: letterbox padding, borders exposed by augmentation, crowd regions.
  - `"classification_localization"`: `{"class": int32 [B], "box": float32 [B, 4]}`, the
    class index and xyxy box (letterboxed frame) of each image's LARGEST object (box area).

Class values are contiguous indices `0..C-1` from `CocoDataset.label_map.index_of(coco_id)`.
Crowd annotations (`iscrowd=1`) never become box/mask/class targets; in semantic targets
rendered from instances their pixels are `SEMANTIC_IGNORE`.
"""

from __future__ import annotations

import tensorflow as tf

# The names and codes are defined once, in the core; this module adds the specs.
from detseg.core.contract import CLASSIFICATION_LOCALIZATION, INSTANCE, SEMANTIC, check_task


def semantic_value(class_index: int) -> int:
    """The semantic-target value of contiguous class index `class_index` (0-based)."""
    return int(class_index) + 1


def target_spec(task: str, image_size: int, max_objects: int,
                batch_size: int | None = None) -> tf.TypeSpec | dict[str, tf.TensorSpec]:
    """The `y` TensorSpec(s) of `task` for one batch (`batch_size=None`: unknown batch)."""
    b, s, n = batch_size, image_size, max_objects
    if check_task(task) == SEMANTIC:
        return tf.TensorSpec([b, s, s], tf.uint8)
    if task == CLASSIFICATION_LOCALIZATION:
        return {"class": tf.TensorSpec([b], tf.int32), "box": tf.TensorSpec([b, 4], tf.float32)}
    spec = {"boxes": tf.TensorSpec([b, n, 4], tf.float32), "classes": tf.TensorSpec([b, n], tf.int32)}
    if task == INSTANCE:
        spec["masks"] = tf.TensorSpec([b, n, s, s], tf.uint8)
    return spec


def image_spec(image_size: int, batch_size: int | None = None) -> tf.TensorSpec:
    """The `x` TensorSpec: `float32 [B, S, S, 3]` pixels in 0..255."""
    return tf.TensorSpec([batch_size, image_size, image_size, 3], tf.float32)
