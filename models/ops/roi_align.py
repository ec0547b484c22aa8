"""RoIAlign over one or several pyramid levels, built on `tf.image.crop_and_resize`.

Why not keras-cv: its `_ROIAligner` / `multilevel_crop_and_resize` (0.9) reshapes
multi-channel features wrongly. `tf.image.crop_and_resize` samples bilinearly, runs in
graph mode and has gradients w.r.t. the features (not under XLA on CPU).

Geometry (He et al. 2017, "aligned" variant): a feature map of stride `s` has its cell
`(i, j)` centred on image pixel `((j + 0.5) s, (i + 0.5) s)`, so image coordinate `x`
is feature index coordinate `x / s - 0.5`. An RoI (xyxy absolute image pixels, max
edge exclusive) is cut into `output_size x output_size` bins; each bin is sampled at
`sampling_ratio x sampling_ratio` regularly spaced points (the centres of equal
sub-cells) and the samples are averaged. Implementation: one `crop_and_resize` to
`output_size * sampling_ratio` samples per side, whose first and last sample are the
centres of the first and last sub-cell, then average pooling by `sampling_ratio`.

Borders: the feature map is padded by one cell replicating its edge, so samples up to
one cell outside the map read the edge value (as the reference RoIAlign clamps
them); samples further out read 0.

Level assignment (FPN, Lin et al. 2017): an RoI of size `sqrt(w h)` goes to level
`floor(canonical_level + log2(sqrt(w h) / canonical_size))`, clipped to the levels
present. All levels must have the same number of channels.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import tensorflow as tf

DEFAULT_SAMPLING_RATIO = 2
CANONICAL_SIZE = 224.0  # RoI side (px) that maps to CANONICAL_LEVEL (FPN paper, ImageNet crop)
CANONICAL_LEVEL = 4


def level_number(level_name: str) -> int:
    """`"P4"` -> 4: the pyramid level whose stride is `2 ** number`."""
    if not (level_name.startswith("P") and level_name[1:].isdigit()):
        raise ValueError(f"pyramid level names look like 'P3', got {level_name!r}")
    return int(level_name[1:])


def assign_pyramid_levels(boxes: tf.Tensor, level_numbers: Sequence[int],
                          canonical_size: float = CANONICAL_SIZE,
                          canonical_level: int = CANONICAL_LEVEL) -> tf.Tensor:
    """Index into `level_numbers` (ascending) of the level each RoI is pooled from.

    Args:
        boxes: `[..., 4]` xyxy image pixels.
        level_numbers: the pyramid levels present, ascending, e.g. `(3, 4, 5)`.
    Returns int32 `[...]` in `0 .. len(level_numbers) - 1`.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    x0, y0, x1, y1 = tf.unstack(boxes, num=4, axis=-1)
    scale = tf.sqrt(tf.maximum(x1 - x0, 0.0) * tf.maximum(y1 - y0, 0.0))
    # A tiny floor keeps log2 finite for degenerate boxes; they land on the lowest level.
    target = tf.floor(canonical_level + tf.math.log(tf.maximum(scale, 1e-6) / canonical_size)
                      / tf.math.log(2.0))
    lowest, highest = min(level_numbers), max(level_numbers)
    target = tf.clip_by_value(target, float(lowest), float(highest))
    # Levels may skip numbers (e.g. (3, 5)): pick the last level not above the target.
    numbers = tf.constant(sorted(level_numbers), tf.float32)
    at_or_below = tf.cast(numbers <= target[..., tf.newaxis], tf.int32)
    return tf.maximum(tf.reduce_sum(at_or_below, axis=-1) - 1, 0)


def _sampling_boxes(boxes: tf.Tensor, stride: float, padded_height: tf.Tensor,
                    padded_width: tf.Tensor, samples: int) -> tf.Tensor:
    """xyxy image px `[M, 4]` -> normalized yxyx `[M, 4]` for crop_and_resize on the padded map.

    The normalized box spans the first to the last sample centre (see module doc).
    """
    x0, y0, x1, y1 = tf.unstack(boxes, num=4, axis=-1)
    # Feature index coordinates, +1 for the one-cell edge padding.
    fx0, fx1 = x0 / stride + 0.5, x1 / stride + 0.5
    fy0, fy1 = y0 / stride + 0.5, y1 / stride + 0.5
    half_x = (fx1 - fx0) / (2.0 * samples)
    half_y = (fy1 - fy0) / (2.0 * samples)
    scale_x = tf.maximum(tf.cast(padded_width, tf.float32) - 1.0, 1.0)
    scale_y = tf.maximum(tf.cast(padded_height, tf.float32) - 1.0, 1.0)
    return tf.stack([(fy0 + half_y) / scale_y, (fx0 + half_x) / scale_x,
                     (fy1 - half_y) / scale_y, (fx1 - half_x) / scale_x], axis=-1)


def crop_and_resize_aligned(feature: tf.Tensor, boxes: tf.Tensor, box_indices: tf.Tensor, stride: float,
                    samples: int) -> tf.Tensor:
    """Bilinear samples at the sub-cell centres of each box (no pooling; see module doc).

    `feature [B, h, w, C]` of stride `stride`, `boxes [M, 4]` xyxy image px, `box_indices
    int32 [M]` (which image of the batch) -> `[M, samples, samples, C]`. Also crops
    full-resolution masks to RoIs (stride 1).
    """
    padded = tf.pad(feature, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    shape = tf.shape(padded)
    normalized = _sampling_boxes(boxes, stride, shape[1], shape[2], samples)
    crops = tf.image.crop_and_resize(padded, normalized, box_indices, [samples, samples],
                                     method="bilinear", extrapolation_value=0.0)
    return tf.cast(crops, feature.dtype)


def per_level_rois(features: Mapping[str, tf.Tensor], boxes: tf.Tensor,
                   crop: Callable[[tf.Tensor, float, tf.Tensor, tf.Tensor], tf.Tensor],
                   strides: Mapping[str, int] | None = None,
                   canonical_size: float = CANONICAL_SIZE,
                   canonical_level: int = CANONICAL_LEVEL) -> tf.Tensor:
    """Runs `crop` on each RoI's pyramid level and returns the results in RoI order.

    `crop(feature [B, h, w, C], stride, level_boxes [M, 4] xyxy px, image_index int32 [M])
    -> [M, ...]` sees the RoIs `assign_pyramid_levels` gives its level; `boxes` is float32
    `[B, R, 4]`. Returns `[B * R, ...]`, row `b * R + r` for RoI `r` of image `b`.
    """
    names = sorted(features, key=level_number)
    strides = {name: float((strides or {}).get(name, 2 ** level_number(name))) for name in names}
    boxes = tf.cast(boxes, tf.float32)
    flat_boxes = tf.reshape(boxes, [-1, 4])
    image_index = tf.repeat(tf.range(tf.shape(boxes)[0], dtype=tf.int32), tf.shape(boxes)[1])
    if len(names) == 1:
        return crop(features[names[0]], strides[names[0]], flat_boxes, image_index)
    level_index = assign_pyramid_levels(flat_boxes, [level_number(n) for n in names],
                                        canonical_size, canonical_level)
    positions = tf.dynamic_partition(tf.range(tf.size(level_index)), level_index, len(names))
    return tf.dynamic_stitch(positions, [
        crop(features[name], strides[name], tf.gather(flat_boxes, where), tf.gather(image_index, where))
        for name, where in zip(names, positions)])


def roi_align(features: Mapping[str, tf.Tensor], boxes: tf.Tensor, output_size: int,
              strides: Mapping[str, int] | None = None,
              sampling_ratio: int = DEFAULT_SAMPLING_RATIO,
              canonical_size: float = CANONICAL_SIZE,
              canonical_level: int = CANONICAL_LEVEL) -> tf.Tensor:
    """Pools a fixed-size feature patch for every RoI.

    Args:
        features: `{"P3": [B, h3, w3, C], ...}`, one or more levels, same `C`.
        boxes: float32 `[B, R, 4]` xyxy absolute pixels of the image the features came from.
        output_size: `P`, the side of each pooled patch.
        strides: level name -> stride in pixels; default `2 ** level_number(name)`.
        sampling_ratio: samples per bin side (2 in Mask R-CNN).
    Returns `[B, R, P, P, C]` in the features' dtype.
    """
    samples = output_size * sampling_ratio

    def pooled_crops(feature, stride, level_boxes, image_index):
        # Pooled per level, before `per_level_rois` stitches the levels: the stitch moves
        # sampling_ratio**2 times less memory than it would with the sampled crops (~80 MB
        # for a batch of 8 at 200 RoIs and 64 channels; benchmarks/roi_align_pooling.py).
        crops = crop_and_resize_aligned(feature, level_boxes, image_index, stride, samples)
        return tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")

    pooled = per_level_rois(features, boxes, pooled_crops, strides, canonical_size, canonical_level)
    batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    channels = next(iter(features.values())).shape[-1]
    return tf.reshape(pooled, [batch, rois, output_size, output_size, channels])
