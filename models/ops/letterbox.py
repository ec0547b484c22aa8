"""The letterbox transform and its inverse: the one implementation (TensorFlow).

A model sees every image as a square `S x S` letterbox: the image is resized keeping its
aspect ratio, centred, and padded with `PAD_PIXEL_VALUE`. The training pipeline
(`pipelines.letterbox`, numpy/OpenCV for speed, its lengths from `letterbox_lengths`
below), the exported graph (`serving`) and training-time evaluation
(`training.predictions`) all take the transform and its inverse from here.

The transform, for an image of `height x width` pixels and model size `S` (`size`):

    longest   = max(height, width)
    scale     = S / longest                                    (float32)
    resized_h = max(floor(height * S / longest + 1/2), 1)      (round half up, at least 1)
              = max((2 * height * S + longest) // (2 * longest), 1)   exactly, in integers
    resized_w = likewise with width; the longer side gets exactly S
    pad_y     = (S - resized_h) // 2                            (integer division: centred,
    pad_x     = (S - resized_w) // 2                             one more row below/right)

    frame point    = original point * scale + (pad_x, pad_y)     (continuous pixel coords)
    original point = (frame point - (pad_x, pad_y)) / scale,     clipped to the image

Pixels are resized bilinearly with half-pixel centres (`tf.image.resize`, no antialias)
into `[pad_y : pad_y + resized_h, pad_x : pad_x + resized_w]`; the rest is
`PAD_PIXEL_VALUE`. Masks go forward by nearest neighbour at half-pixel centres, computed
exactly: output index `i` of `n` reads input index `((2 * i + 1) * m) // (2 * n)` of `m`
(`nearest_source_index`).

Dense outputs (class probabilities, logits, instance-mask probabilities, class ids) may
have any resolution `Hm x Wm` covering the whole `S x S` frame; they go back by sampling
at the centres of the original pixels (`dense_to_original`: bilinear for scores, nearest
for ids), so a stride-4 head maps back as well as a full-resolution one. Bilinear samples
stay within the image's own part of the map (between the centres of its first and last
frame pixels): an image's border pixels never blend in what the model predicted over the
letterbox padding.

A transform is a dict of float32 tensors `{"scale", "pad_x", "pad_y", "resized_h",
"resized_w", "height", "width"}`, scalars for one image or `[B]` vectors for a batch
(`letterbox_transform`). It travels through `tf.data` batches as the `float32 [..., 5]`
vector `(scale, pad_x, pad_y, height, width)` (`TRANSFORM_SIZE`; `transform_to_vector`,
`transform_from_vector`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import tensorflow as tf

from detseg.core.contract import MASK_THRESHOLD, PAD_BOX_VALUE, PAD_PIXEL_VALUE, TRANSFORM_SIZE

Transform = dict[str, tf.Tensor]
TRANSFORM_KEYS = ("scale", "pad_x", "pad_y", "resized_h", "resized_w", "height", "width")
VECTOR_KEYS = ("scale", "pad_x", "pad_y", "height", "width")  # the [..., 5] vector, in order


def letterbox_lengths(height: Any, width: Any, size: Any, maximum: Callable = max) -> tuple[Any, Any, Any, Any]:
    """`(resized_h, resized_w, pad_y, pad_x)` of the module formula, exact integer arithmetic.

    The one formula for the lengths: Python ints (`maximum=max`, what the numpy pipeline
    uses) or integer tensors of any matching shapes (`maximum=tf.maximum`, what
    `letterbox_transform` uses). Sizes must be positive.
    """
    longest = maximum(height, width)
    resized_h = maximum((2 * height * size + longest) // (2 * longest), 1)
    resized_w = maximum((2 * width * size + longest) // (2 * longest), 1)
    return resized_h, resized_w, (size - resized_h) // 2, (size - resized_w) // 2


def nearest_source_index(index: Any, in_length: Any, out_length: Any) -> Any:
    """Input index read by output `index` when resizing `in_length` -> `out_length` (nearest).

    `floor((index + 1/2) * in_length / out_length)`, i.e. nearest neighbour at half-pixel
    centres, computed exactly in integers (Python, numpy or TF integers alike).
    """
    return ((2 * index + 1) * in_length) // (2 * out_length)


def letterbox_transform(height: Any, width: Any, size: Any) -> Transform:
    """Image sizes (int scalars or `[B]` vectors, Python or tensors) -> the transform.

    Returns float32 tensors `{"scale", "pad_x", "pad_y", "resized_h", "resized_w",
    "height", "width"}`, each with the shape of `height`; `size` is S (an int or int
    scalar tensor). The formula is in the module docstring.
    """
    height = tf.cast(height, tf.int64)
    width = tf.cast(width, tf.int64)
    size = tf.cast(size, tf.int64)
    resized_h, resized_w, pad_y, pad_x = letterbox_lengths(height, width, size, maximum=tf.maximum)
    scale = tf.cast(size, tf.float32) / tf.cast(tf.maximum(height, width), tf.float32)
    values = {"scale": scale, "pad_x": pad_x, "pad_y": pad_y, "resized_h": resized_h,
              "resized_w": resized_w, "height": height, "width": width}
    return {key: tf.cast(value, tf.float32) for key, value in values.items()}


def transform_to_vector(transform: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Transform -> `float32 [..., 5]`: `(scale, pad_x, pad_y, height, width)`."""
    return tf.stack([tf.cast(transform[key], tf.float32) for key in VECTOR_KEYS], axis=-1)


def vector_frame_size(vector: Any) -> tf.Tensor:
    """S of a `[..., 5]` transform vector: `round(scale * max(height, width))` (int64 `[...]`)."""
    vector = tf.convert_to_tensor(vector, tf.float32)
    longest = tf.maximum(vector[..., 3], vector[..., 4])
    return tf.cast(tf.round(vector[..., 0] * longest), tf.int64)


def transform_from_vector(vector: Any, size: Any = None) -> Transform:
    """`float32 [..., 5]` vector -> transform dict (scalars for `[5]`, `[B]` for `[B, 5]`).

    `resized_h`/`resized_w` are recomputed by the formula for model size `size`
    (default: `vector_frame_size(vector)`); the other values are the vector's.
    """
    vector = tf.convert_to_tensor(vector, tf.float32)
    if vector.shape[-1] != TRANSFORM_SIZE:
        raise ValueError(f"a letterbox vector has {TRANSFORM_SIZE} values, got shape {vector.shape}")
    size = vector_frame_size(vector) if size is None else size
    height = tf.cast(tf.round(vector[..., 3]), tf.int64)
    width = tf.cast(tf.round(vector[..., 4]), tf.int64)
    recomputed = letterbox_transform(height, width, size)
    transform = {key: vector[..., i] for i, key in enumerate(VECTOR_KEYS)}
    transform.update(resized_h=recomputed["resized_h"], resized_w=recomputed["resized_w"])
    return transform


def _as_transform(transform: Mapping[str, tf.Tensor] | Any) -> Mapping[str, tf.Tensor]:
    return transform if isinstance(transform, Mapping) else transform_from_vector(transform)


# ---------------------------------------------------------------------------- forward


def letterbox_images(images: tf.Tensor, size: int) -> tuple[tf.Tensor, Transform]:
    """Same-size images `[B, H, W, C]` (any dtype, 0..255) -> `float32 [B, S, S, C]` and the transform.

    The transform's tensors are vectors `[B]` (identical rows), so they batch like the
    per-image transforms of `letterbox_image`.
    """
    shape = tf.shape(images)
    transform = letterbox_transform(shape[1], shape[2], size)
    resized = tf.image.resize(tf.cast(images, tf.float32),
                              tf.cast(tf.stack([transform["resized_h"], transform["resized_w"]]), tf.int32),
                              method="bilinear")
    top, left = tf.cast(transform["pad_y"], tf.int32), tf.cast(transform["pad_x"], tf.int32)
    bottom = size - top - tf.cast(transform["resized_h"], tf.int32)
    right = size - left - tf.cast(transform["resized_w"], tf.int32)
    framed = tf.pad(resized, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=PAD_PIXEL_VALUE)
    framed = tf.ensure_shape(framed, [None, size, size, images.shape[-1]])
    return framed, {key: tf.fill([shape[0]], value) for key, value in transform.items()}


def letterbox_image(image: tf.Tensor, size: int) -> tuple[tf.Tensor, Transform]:
    """One image `[H, W, C]` -> `float32 [S, S, C]` and its transform (scalars)."""
    framed, transform = letterbox_images(tf.convert_to_tensor(image)[tf.newaxis], size)
    return framed[0], {key: value[0] for key, value in transform.items()}


def letterbox_masks(masks: tf.Tensor, size: int, fill: int = 0) -> tf.Tensor:
    """Masks `[N, H, W]` (any dtype) -> `[N, S, S]` (dtype kept), nearest, padding = `fill`.

    `fill` is 0 for instance masks, `SEMANTIC_IGNORE` for a semantic label map.
    """
    masks = tf.convert_to_tensor(masks)
    shape = tf.shape(masks, out_type=tf.int64)
    transform = letterbox_transform(shape[1], shape[2], size)
    resized_h = tf.cast(transform["resized_h"], tf.int64)
    resized_w = tf.cast(transform["resized_w"], tf.int64)
    rows = nearest_source_index(tf.range(resized_h), shape[1], resized_h)
    cols = nearest_source_index(tf.range(resized_w), shape[2], resized_w)
    resized = tf.gather(tf.gather(masks, rows, axis=1), cols, axis=2)
    top, left = tf.cast(transform["pad_y"], tf.int64), tf.cast(transform["pad_x"], tf.int64)
    padded = tf.pad(resized, [[0, 0], [top, size - top - resized_h], [left, size - left - resized_w]],
                    constant_values=tf.cast(fill, masks.dtype))
    return tf.ensure_shape(padded, [None, size, size])


def boxes_to_frame(boxes: tf.Tensor, transform: Mapping[str, tf.Tensor] | Any) -> tf.Tensor:
    """xyxy original-pixel boxes `[..., K, 4]` -> float32 frame boxes: `x * scale + pad_x`, `y * scale + pad_y`.

    `transform` holds one value per `[...]` (scalars for `[K, 4]`), or is its `[..., 5]` vector.
    """
    transform = _as_transform(transform)
    boxes = tf.cast(boxes, tf.float32)
    scale = transform["scale"][..., tf.newaxis, tf.newaxis]
    offset = tf.stack([transform["pad_x"], transform["pad_y"]] * 2, axis=-1)[..., tf.newaxis, :]
    return boxes * scale + offset


# ---------------------------------------------------------------------------- inverse


def boxes_to_original(boxes: tf.Tensor, transform: Mapping[str, tf.Tensor] | Any) -> tf.Tensor:
    """xyxy frame boxes `[..., K, 4]` -> float32 xyxy original pixels, clipped to the image.

    `x = clip((x' - pad_x) / scale, 0, width)`, `y = clip((y' - pad_y) / scale, 0, height)`.
    `transform` holds one value per `[...]` (`[B]` vectors for `[B, K, 4]`, scalars for
    `[K, 4]`), or is its `[..., 5]` vector. Padding rows (all `PAD_BOX_VALUE`) stay padding.
    """
    transform = _as_transform(transform)
    boxes = tf.cast(boxes, tf.float32)

    def per_box(key: str) -> tf.Tensor:
        return tf.cast(transform[key], tf.float32)[..., tf.newaxis, tf.newaxis]

    x = (boxes[..., 0::2] - per_box("pad_x")) / per_box("scale")
    y = (boxes[..., 1::2] - per_box("pad_y")) / per_box("scale")
    x = tf.clip_by_value(x, 0.0, per_box("width"))
    y = tf.clip_by_value(y, 0.0, per_box("height"))
    restored = tf.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)
    padding = tf.reduce_all(tf.equal(boxes, PAD_BOX_VALUE), axis=-1, keepdims=True)
    return tf.where(padding, tf.constant(PAD_BOX_VALUE, tf.float32), restored)


def _sample_positions(count: tf.Tensor, scale: tf.Tensor, pad: tf.Tensor, frame_to_map: tf.Tensor) -> tf.Tensor:
    """Continuous map coordinates of the centres of `count` original pixels along one axis."""
    centres = tf.range(tf.cast(count, tf.float32)) + 0.5
    return (centres * scale + pad) * frame_to_map


def dense_to_original(dense: tf.Tensor, transform: Mapping[str, tf.Tensor], frame_size: Any,
                      out_height: tf.Tensor, out_width: tf.Tensor, method: str) -> tf.Tensor:
    """One dense map covering the frame `[Hm, Wm, C]` -> `[out_height, out_width, C]`.

    `transform` holds scalars for this image; `out_height x out_width` is normally the
    original size and `frame_size` is S (an int or a scalar tensor). Original pixel `(r, c)` reads the map at
    `((r + 1/2) * scale + pad_y) * Hm / S`, `((c + 1/2) * scale + pad_x) * Wm / S`.
    `method` "bilinear" (scores, logits, mask probabilities; float32 out) or "nearest"
    (class ids: the map cell containing that point; dtype kept). Bilinear samples clamp
    to the image's part of the map (see the module doc); nearest samples of original
    pixel centres fall inside it.
    """
    frame_size = tf.cast(frame_size, tf.float32)
    map_h = tf.shape(dense)[0]
    map_w = tf.shape(dense)[1]
    ys = _sample_positions(out_height, transform["scale"], transform["pad_y"],
                           tf.cast(map_h, tf.float32) / frame_size)
    xs = _sample_positions(out_width, transform["scale"], transform["pad_x"],
                           tf.cast(map_w, tf.float32) / frame_size)
    if method == "nearest":
        rows = tf.clip_by_value(tf.cast(tf.floor(ys), tf.int32), 0, map_h - 1)
        cols = tf.clip_by_value(tf.cast(tf.floor(xs), tf.int32), 0, map_w - 1)
        return tf.gather(tf.gather(dense, rows, axis=0), cols, axis=1)
    if method != "bilinear":
        raise ValueError(f"dense resampling method must be 'bilinear' or 'nearest', got {method!r}")
    dense = tf.cast(dense, tf.float32)
    rows = _index_positions_inside_image(ys, transform["pad_y"], transform["resized_h"], map_h, frame_size)
    cols = _index_positions_inside_image(xs, transform["pad_x"], transform["resized_w"], map_w, frame_size)
    dense = _interpolate_axis(dense, rows, map_h, axis=0)
    return _interpolate_axis(dense, cols, map_w, axis=1)


def masks_to_original(masks: tf.Tensor, transform: Mapping[str, tf.Tensor] | Any, frame_size: Any,
                      threshold: float = MASK_THRESHOLD) -> tf.Tensor:
    """One image's instance masks `[K, Hm, Wm]` (probabilities or 0/1) -> `uint8 [K, H, W]` 0/1.

    Each mask is resampled bilinearly to the original `height x width` (`dense_to_original`)
    and thresholded at `threshold` (a pixel is the object where the value is >= it), as
    the exported graph does. `transform` holds scalars (or is the `[5]` vector).
    """
    transform = _as_transform(transform)
    dense = tf.transpose(tf.cast(masks, tf.float32), [1, 2, 0])
    height = tf.cast(transform["height"], tf.int32)
    width = tf.cast(transform["width"], tf.int32)
    probabilities = dense_to_original(dense, transform, frame_size, height, width, "bilinear")
    return tf.transpose(tf.cast(probabilities >= threshold, tf.uint8), [2, 0, 1])


def _index_positions_inside_image(positions: tf.Tensor, pad: tf.Tensor, resized: tf.Tensor,
                                  map_length: tf.Tensor, frame_size: tf.Tensor) -> tf.Tensor:
    """Continuous map coordinates -> index-space positions (`- 0.5`), clamped to the image's part.

    The limits are the centres of the image's first and last frame pixels in map index
    space, so interpolation never reaches into the letterbox padding (on a full-resolution
    map this equals cropping `[pad : pad + resized]` and resizing it bilinearly, up to the
    rounding of `resized / height` vs `scale`).
    """
    frame_to_map = tf.cast(map_length, tf.float32) / frame_size
    first = (pad + 0.5) * frame_to_map - 0.5
    last = (pad + resized - 0.5) * frame_to_map - 0.5
    return tf.clip_by_value(positions - 0.5, first, last)


def _interpolate_axis(values: tf.Tensor, positions: tf.Tensor, length: tf.Tensor, axis: int) -> tf.Tensor:
    """Linear interpolation of `values` along `axis` at index-space `positions`, clamped to the edges."""
    positions = tf.clip_by_value(positions, 0.0, tf.cast(length - 1, tf.float32))
    low = tf.floor(positions)
    weight = positions - low
    low_index = tf.cast(low, tf.int32)
    high_index = tf.minimum(low_index + 1, length - 1)
    shape = [-1, 1, 1] if axis == 0 else [1, -1, 1]
    weight = tf.reshape(weight, shape)
    return (tf.gather(values, low_index, axis=axis) * (1.0 - weight)
            + tf.gather(values, high_index, axis=axis) * weight)
