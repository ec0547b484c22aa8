"""From a model's raw outputs in the letterbox frame to the served outputs in original pixels.

Each task turns the dict that `infer(pixels)` returns into the signature outputs that
TF Serving clients receive. Every output keeps the batch dimension `B` so TF Serving's
row format (`"instances"` -> `"predictions"`) works.

The task names are `detseg.core.contract.TASKS`: a model serves the task it trains on.

detection and instance, what `infer` returns (S x S letterbox frame):
    boxes f32 [B, K, 4] xyxy px, scores f32 [B, K], classes int [B, K] (PAD_CLASS = unused),
    optional num_detections int [B], optional masks f32/uint8 [B, K, Hm, Wm] covering the frame.
  served: boxes f32 [B, K, 4] xyxy ORIGINAL px, scores f32 [B, K], classes i32 [B, K],
    class_names string [B, K] ("" for unused slots), num_detections i32 [B], and when the
    model has masks: masks uint8 [B, D, Hmax, Wmax] (0/1) plus image_height/image_width,
    D = the batch's largest num_detections (masks exist for detections only).
    The first num_detections slots of each row are the detections, in the model's order;
    the other slots hold box 0, score 0, class PAD_CLASS, name "" (and an empty mask
    below D).

semantic, what `infer` returns: logits or probabilities f32 [B, Hm, Wm, C], or
    class_map int [B, Hm, Wm], covering the frame.
  served: class_map i32 [B, Hmax, Wmax], image_height i32 [B], image_width i32 [B],
    label_names string [B, C] (the label file, once per row).

classification_localization, what `infer` returns: class_probabilities f32 [B, C] (or
    class int [B] and score f32 [B]) and box f32 [B, 4] xyxy px in the frame.
  served: class i32 [B], score f32 [B], class_name string [B], box f32 [B, 4] original px.

Mixed-size batches (the encoded-image signature): dense outputs are each image's map at
its own size, padded to the largest height/width in the batch with PADDED_PIXEL (class
maps) or 0 (masks); `image_height[i]` x `image_width[i]` is the valid top-left region.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from detseg.core.contract import (CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, MASK_THRESHOLD, PAD_CLASS,
                                  SEMANTIC, SEMANTIC_SCORE_OUTPUTS, TASKS)
from detseg.models.ops.letterbox import boxes_to_original, dense_to_original
from detseg.models.ops.nms import detections_in_use

PADDED_PIXEL = -1  # class_map value outside an image's own size in a mixed-size batch

LabelLookup = Callable[[tf.Tensor], tf.Tensor]  # int32 class indices -> their names ("" if unknown)


class RawOutputError(ValueError):
    """The model's `infer` outputs do not match what its task expects."""


def _require(raw: dict, names: tuple[str, ...], task: str) -> None:
    missing = [n for n in names if n not in raw]
    if missing:
        raise RawOutputError(f"{task} model outputs lack {missing}; it returned {sorted(raw)}")


def _image_sizes(transforms: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(transforms["height"], tf.int32), tf.cast(transforms["width"], tf.int32)


def _per_image_dense(dense: tf.Tensor, transforms: dict[str, tf.Tensor], frame_size: int,
                     method: str, pad_value, out_dtype: tf.DType) -> tf.Tensor:
    """`[B, Hm, Wm, C]` frame maps -> `[B, Hmax, Wmax, C]` original-size maps, padded with `pad_value`."""
    heights, widths = _image_sizes(transforms)
    max_h = tf.reduce_max(tf.concat([heights, [0]], 0))
    max_w = tf.reduce_max(tf.concat([widths, [0]], 0))

    def one(index: tf.Tensor) -> tf.Tensor:
        transform = {k: v[index] for k, v in transforms.items()}
        h, w = heights[index], widths[index]
        sampled = dense_to_original(dense[index], transform, frame_size, h, w, method)
        sampled = tf.cast(sampled, out_dtype)
        return tf.pad(sampled, [[0, max_h - h], [0, max_w - w], [0, 0]], constant_values=pad_value)

    channels = dense.shape[-1]
    return tf.map_fn(one, tf.range(tf.shape(dense)[0]),
                     fn_output_signature=tf.TensorSpec([None, None, channels], out_dtype))


def detection_outputs(raw: dict, transforms: dict[str, tf.Tensor], frame_size: int,
                      label_lookup: LabelLookup) -> dict[str, tf.Tensor]:
    """Detection raw outputs (letterbox frame) -> served outputs (original pixels); see module doc."""
    _require(raw, ("boxes", "scores", "classes"), "detection")
    boxes = tf.cast(raw["boxes"], tf.float32)
    scores = tf.cast(raw["scores"], tf.float32)
    classes = tf.cast(raw["classes"], tf.int32)
    slots = tf.range(tf.shape(classes)[1])[tf.newaxis, :]
    valid = classes > PAD_CLASS
    if "num_detections" in raw:
        valid &= slots < tf.cast(tf.reshape(raw["num_detections"], [-1, 1]), tf.int32)
    # Valid slots first, each group in the model's order, so clients can read the first N.
    order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), axis=1, stable=True)
    valid = tf.gather(valid, order, batch_dims=1)
    fvalid = tf.cast(valid, tf.float32)
    classes = tf.where(valid, tf.gather(classes, order, batch_dims=1), PAD_CLASS)
    boxes = boxes_to_original(tf.gather(boxes, order, batch_dims=1), transforms) * fvalid[..., tf.newaxis]
    outputs = {
        "boxes": boxes,
        "scores": tf.gather(scores, order, batch_dims=1) * fvalid,
        "classes": classes,
        "class_names": label_lookup(classes),
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
    }
    if "masks" in raw:
        # Only the first D slots (D: the batch's largest num_detections) hold masks; mapping
        # the padding slots to the original size too would cost K / D times the work.
        used = detections_in_use(outputs["num_detections"])
        masks = tf.gather(tf.cast(raw["masks"], tf.float32), order[:, :used], batch_dims=1)
        masks = _per_image_dense(tf.transpose(masks, [0, 2, 3, 1]), transforms, frame_size,
                                 "bilinear", 0.0, tf.float32)
        in_use = tf.cast(valid[:, tf.newaxis, tf.newaxis, :used], tf.uint8)
        masks = tf.cast(masks >= MASK_THRESHOLD, tf.uint8) * in_use
        outputs["masks"] = tf.transpose(masks, [0, 3, 1, 2])
        outputs["image_height"], outputs["image_width"] = _image_sizes(transforms)
    return outputs


def semantic_outputs(raw: dict, transforms: dict[str, tf.Tensor], frame_size: int,
                         label_lookup: LabelLookup, num_labels: int) -> dict[str, tf.Tensor]:
    """Semantic raw outputs (frame) -> class map at the original size; see module doc."""
    score_key = next((k for k in SEMANTIC_SCORE_OUTPUTS if k in raw), None)
    if score_key is not None:
        scores = _per_image_dense(tf.cast(raw[score_key], tf.float32), transforms, frame_size,
                                  "bilinear", 0.0, tf.float32)
        class_map = tf.argmax(scores, axis=-1, output_type=tf.int32)
        # Padding beyond each image: argmax of zeros would read as class 0, so mark it.
        heights, widths = _image_sizes(transforms)
        inside = (tf.range(tf.shape(class_map)[1])[tf.newaxis, :, tf.newaxis] < heights[:, tf.newaxis, tf.newaxis]) \
            & (tf.range(tf.shape(class_map)[2])[tf.newaxis, tf.newaxis, :] < widths[:, tf.newaxis, tf.newaxis])
        class_map = tf.where(inside, class_map, PADDED_PIXEL)
    elif "class_map" in raw:
        dense = tf.cast(raw["class_map"], tf.int32)[..., tf.newaxis]
        class_map = _per_image_dense(dense, transforms, frame_size, "nearest", PADDED_PIXEL, tf.int32)[..., 0]
    else:
        raise RawOutputError(f"semantic model outputs need 'logits', 'probabilities' or 'class_map'; "
                             f"it returned {sorted(raw)}")
    heights, widths = _image_sizes(transforms)
    names = label_lookup(tf.range(num_labels, dtype=tf.int32))
    return {"class_map": class_map, "image_height": heights, "image_width": widths,
            "label_names": tf.tile(names[tf.newaxis], [tf.shape(heights)[0], 1])}


def classification_localization_outputs(raw: dict, transforms: dict[str, tf.Tensor],
                                        label_lookup: LabelLookup) -> dict[str, tf.Tensor]:
    """Class + one box per image (frame) -> class, score, name and box in original pixels."""
    _require(raw, ("box",), "classification_localization")
    if "class_probabilities" in raw:
        probabilities = tf.cast(raw["class_probabilities"], tf.float32)
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        score = tf.reduce_max(probabilities, axis=-1)
    else:
        _require(raw, ("class", "score"), "classification_localization")
        classes = tf.cast(tf.reshape(raw["class"], [-1]), tf.int32)
        score = tf.cast(tf.reshape(raw["score"], [-1]), tf.float32)
    box = boxes_to_original(tf.cast(raw["box"], tf.float32)[:, tf.newaxis, :], transforms)[:, 0, :]
    return {"class": classes, "score": score, "class_name": label_lookup(classes), "box": box}


def served_outputs(task: str, raw: dict, transforms: dict[str, tf.Tensor], frame_size: int,
                   label_lookup: LabelLookup, num_labels: int) -> dict[str, tf.Tensor]:
    """Dispatch on `task` (one of TASKS)."""
    if not isinstance(raw, dict):
        raise RawOutputError(f"infer must return a dict of tensors, got {type(raw).__name__}")
    if task in (DETECTION, INSTANCE):
        return detection_outputs(raw, transforms, frame_size, label_lookup)
    if task == SEMANTIC:
        return semantic_outputs(raw, transforms, frame_size, label_lookup, num_labels)
    if task == CLASSIFICATION_LOCALIZATION:
        return classification_localization_outputs(raw, transforms, label_lookup)
    raise RawOutputError(f"task must be one of {TASKS}, got {task!r}")
