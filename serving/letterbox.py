"""In-graph letterboxing and its inverse, for the serving signatures.

A served model sees every image as a square `S x S` letterbox: the image is resized
keeping its aspect ratio, then padded with a constant. Everything the model predicts
in that frame is mapped back to the ORIGINAL image here, inside the SavedModel graph.

The transform, for an image of `height x width` pixels and model size `S`:

    scale     = S / max(height, width)
    resized_h = round_half_up(height * scale)      (at least 1; `round_half_up(v) = floor(v + 0.5)`)
    resized_w = round_half_up(width * scale)
    pad_y, pad_x = (S - resized_h) // 2, (S - resized_w) // 2    placement "center" (the default)
                 = 0, 0                                            placement "top_left"

    letterbox point = original point * scale + (pad_x, pad_y)      (continuous pixel coords)
    original point  = (letterbox point - (pad_x, pad_y)) / scale    then clipped to the image

Pixels are resized bilinearly with half-pixel centers (`tf.image.resize`, no antialias)
into `[pad_y : pad_y + resized_h, pad_x : pad_x + resized_w]`; the rest is `pad_value`
(default 114, mid-grey).
Dense outputs (class maps, logits, masks) may have any resolution `Hm x Wm` as long as
they cover the whole `S x S` frame; they are resampled at the centres of the original
pixels (bilinear for scores, nearest for class ids), so a stride-4 head maps back as
well as a full-resolution one. Bilinear samples stay within the image's own part of the
map (between the centres of its first and last frame pixels), as cropping that part and
then resizing it would: an image's border pixels never blend in what the model predicted
over the letterbox padding.

The defaults are the training pipeline's letterbox (`pipelines/letterbox.py`: centred,
PAD_PIXEL_VALUE 114, the same rounding), which serving may not import: keep the formula
above and that docstring in step. Masks and class maps go back by sampling at original
pixel centres, which equals the pipeline's crop-then-resize up to the rounding of
`resized_h / height` vs `scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

PLACEMENTS = ("top_left", "center")


@dataclass(frozen=True)
class LetterboxSpec:
    """How images become the model's square input. `size` is S in pixels."""

    size: int
    placement: str = "center"
    pad_value: float = 114.0

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"letterbox size must be a positive number of pixels, got {self.size}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"letterbox placement must be one of {PLACEMENTS}, got {self.placement!r}")


def letterbox_transform(height: tf.Tensor, width: tf.Tensor, spec: LetterboxSpec) -> dict[str, tf.Tensor]:
    """Scalars (or matching vectors) of image size -> the transform as float32 tensors.

    Returns `{"scale", "pad_x", "pad_y", "resized_h", "resized_w", "height", "width"}`,
    each with the shape of `height`; the formula is in the module docstring.
    """
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    size = float(spec.size)
    scale = size / tf.maximum(height, width)
    resized_h = tf.clip_by_value(tf.floor(height * scale + 0.5), 1.0, size)
    resized_w = tf.clip_by_value(tf.floor(width * scale + 0.5), 1.0, size)
    if spec.placement == "center":
        pad_y = tf.floor((size - resized_h) / 2.0)
        pad_x = tf.floor((size - resized_w) / 2.0)
    else:
        pad_y = tf.zeros_like(height)
        pad_x = tf.zeros_like(width)
    return {"scale": scale, "pad_x": pad_x, "pad_y": pad_y, "resized_h": resized_h,
            "resized_w": resized_w, "height": height, "width": width}


def letterbox_images(images: tf.Tensor, spec: LetterboxSpec) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Same-size images `[B, H, W, 3]` (any dtype, 0..255) -> `float32 [B, S, S, 3]` and the transform.

    The transform's tensors are vectors `[B]` (identical rows) so they batch like the
    per-image transforms of `letterbox_image`.
    """
    shape = tf.shape(images)
    batch = shape[0]
    transform = letterbox_transform(shape[1], shape[2], spec)
    resized = tf.image.resize(tf.cast(images, tf.float32),
                              tf.cast(tf.stack([transform["resized_h"], transform["resized_w"]]), tf.int32),
                              method="bilinear")
    framed = _pad_to_frame(resized, transform, spec)
    return framed, {k: tf.fill([batch], v) for k, v in transform.items()}


def letterbox_image(image: tf.Tensor, spec: LetterboxSpec) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """One image `[H, W, 3]` -> `float32 [S, S, 3]` and its transform (scalars)."""
    framed, transform = letterbox_images(image[tf.newaxis], spec)
    return framed[0], {k: v[0] for k, v in transform.items()}


def _pad_to_frame(resized: tf.Tensor, transform: dict[str, tf.Tensor], spec: LetterboxSpec) -> tf.Tensor:
    """`[B, resized_h, resized_w, 3]` -> `[B, S, S, 3]` with `pad_value` around it."""
    size = spec.size
    top = tf.cast(transform["pad_y"], tf.int32)
    left = tf.cast(transform["pad_x"], tf.int32)
    bottom = size - top - tf.cast(transform["resized_h"], tf.int32)
    right = size - left - tf.cast(transform["resized_w"], tf.int32)
    padded = tf.pad(resized, [[0, 0], [top, bottom], [left, right], [0, 0]],
                    constant_values=float(spec.pad_value))
    return tf.ensure_shape(padded, [None, size, size, 3])


def boxes_to_original(boxes: tf.Tensor, transform: dict[str, tf.Tensor]) -> tf.Tensor:
    """xyxy boxes in the letterbox frame `[B, K, 4]` -> xyxy original pixels, clipped to the image.

    `transform` holds vectors `[B]` (one transform per image).
    """
    boxes = tf.cast(boxes, tf.float32)
    scale = transform["scale"][:, tf.newaxis]
    x = (boxes[..., 0::2] - transform["pad_x"][:, tf.newaxis, tf.newaxis]) / scale[..., tf.newaxis]
    y = (boxes[..., 1::2] - transform["pad_y"][:, tf.newaxis, tf.newaxis]) / scale[..., tf.newaxis]
    x = tf.clip_by_value(x, 0.0, transform["width"][:, tf.newaxis, tf.newaxis])
    y = tf.clip_by_value(y, 0.0, transform["height"][:, tf.newaxis, tf.newaxis])
    return tf.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _sample_positions(count: tf.Tensor, scale: tf.Tensor, pad: tf.Tensor, frame_to_map: tf.Tensor) -> tf.Tensor:
    """Continuous map coordinates of the centres of `count` original pixels along one axis."""
    centres = tf.range(tf.cast(count, tf.float32)) + 0.5
    return (centres * scale + pad) * frame_to_map


def dense_to_original(dense: tf.Tensor, transform: dict[str, tf.Tensor], frame_size: int,
                      out_height: tf.Tensor, out_width: tf.Tensor, method: str) -> tf.Tensor:
    """One dense map covering the letterbox frame `[Hm, Wm, C]` -> `[out_height, out_width, C]`.

    `transform` holds scalars for this image; `out_height x out_width` is normally the
    original size. `method` "bilinear" (scores, logits, mask probabilities; float32 out)
    or "nearest" (class ids; dtype kept). Bilinear samples clamp to the image's part of
    the map (see the module doc); nearest samples of original pixel centres fall inside it.
    """
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


def _index_positions_inside_image(positions: tf.Tensor, pad: tf.Tensor, resized: tf.Tensor,
                                  map_length: tf.Tensor, frame_size: int) -> tf.Tensor:
    """Continuous map coordinates -> index-space positions (`- 0.5`), clamped to the image's part.

    The limits are the centres of the image's first and last frame pixels in map index
    space, so interpolation never reaches into the letterbox padding (on a full-resolution
    map this equals cropping `[pad : pad + resized]` and resizing it bilinearly).
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
