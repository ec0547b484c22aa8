"""What a network's features look like: first-layer filters, a channel's best patches, object embeddings.

- `first_layer_filters(model)`: the kernels of the first convolution on the pixels,
  float32 `[n, kh, kw, 3]`, each scaled to 0..1 on its own (a picture per filter).
- `maximally_activating_patches(model, layer, channel, images, top_k)`: where in a set of
  images one channel of one layer responds most (`channel=None`: the channel with the
  strongest response, so an unused channel never fills the picture with zeros), each with the input region that can
  reach that activation (its receptive field, measured by `receptive_field`: the input
  pixels with a non-zero gradient when every activation passes gradients unchanged,
  so the network is treated as linear and ReLU gates cannot shrink it).
- `object_features(model, images, objects, level)`: one bottleneck feature vector per
  object (the mean of the backbone's `level` features over the object's box);
  `tsne_embedding` (scikit-learn t-SNE, deterministic under a seed) and
  `nearest_neighbours` (L2) work on those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from detseg.models.explain.layer_hooks import PASS_THROUGH, capture_outputs, find_layer, gradient_rule, pixel_model
from detseg.models.explain.targets import ExplanationError

FEATURE_BATCH = 8


def first_layer_filters(model: keras.Model) -> np.ndarray:
    """Kernels of the first Conv2D that reads the 3 colour channels: float32 `[n, kh, kw, 3]` in 0..1."""
    for layer in pixel_model(model).layers:
        if type(layer) is keras.layers.Conv2D and int(layer.kernel.shape[2]) == 3:
            kernel = np.transpose(layer.kernel.numpy(), (3, 0, 1, 2))            # [n, kh, kw, 3]
            low = kernel.min(axis=(1, 2, 3), keepdims=True)
            high = kernel.max(axis=(1, 2, 3), keepdims=True)
            return ((kernel - low) / np.maximum(high - low, 1e-12)).astype(np.float32)
    raise ExplanationError(f"model '{model.name}' has no convolution on the 3 colour channels")


def layer_activations(model: keras.Model, layer: str, images) -> np.ndarray:
    """`layer`'s output `[N, h, w, c]` for `images` float32 `[N, S, S, 3]` (batches of 8)."""
    hooked = find_layer(model, layer)
    images = np.asarray(images, np.float32)
    chunks = []
    for start in range(0, len(images), FEATURE_BATCH):
        with capture_outputs(hooked) as outputs:
            model(tf.constant(images[start:start + FEATURE_BATCH]), training=False)
        if not outputs or getattr(outputs[-1], "shape", None) is None or len(outputs[-1].shape) != 4:
            raise ExplanationError(f"layer {layer!r} ({hooked.name}) gives no [B, h, w, c] feature map")
        chunks.append(np.asarray(outputs[-1]))
    return np.concatenate(chunks)


def receptive_field(model: keras.Model, layer: str, y: int, x: int,
                    image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input box `(x0, y0, x1, y1)` (end exclusive) that reaches `layer`'s cell `(y, x)`."""
    hooked = find_layer(model, layer)
    pixels = tf.fill((1, int(image_size[0]), int(image_size[1]), 3), 127.5)
    with gradient_rule(model, PASS_THROUGH), capture_outputs(hooked) as outputs:
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            model(pixels, training=False)
            cell = tf.reduce_sum(outputs[-1][0, y, x, :])
        gradient = tape.gradient(cell, pixels)
    reach = np.abs(gradient[0].numpy()).sum(-1) > 0 if gradient is not None else np.zeros(pixels.shape[1:3], bool)
    rows, columns = np.nonzero(reach)
    if len(rows) == 0:
        raise ExplanationError(f"layer {layer!r}: cell ({y}, {x}) depends on no input pixel")
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1


@dataclass(frozen=True)
class Patch:
    """One strong activation: image index, cell `(y, x)`, value, its input box and pixels, the channel."""

    image_index: int
    cell: tuple[int, int]
    activation: float
    box: tuple[int, int, int, int]
    pixels: np.ndarray
    channel: int = 0


def strongest_channel(activations: np.ndarray) -> int:
    """The channel of `activations` `[N, h, w, c]` with the largest single value (the first on ties)."""
    return int(np.argmax(activations.reshape(-1, activations.shape[-1]).max(axis=0)))


def maximally_activating_patches(model: keras.Model, layer: str, channel: int | None, images,
                                 top_k: int = 9) -> list[Patch]:
    """The `top_k` strongest cells of `channel` at `layer` over `images` `[N, S, S, 3]`, strongest first.

    `channel=None` takes `strongest_channel`; every `Patch` says which channel it is of.
    """
    images = np.asarray(images, np.float32)
    activations = layer_activations(model, layer, images)
    if channel is None:
        channel = strongest_channel(activations)
    if not 0 <= channel < activations.shape[-1]:
        raise ExplanationError(f"channel {channel} is out of range: layer {layer!r} has "
                               f"{activations.shape[-1]} channels")
    values = activations[..., channel]                                              # [N, h, w]
    order = np.argsort(-values, axis=None)[:top_k]
    patches = []
    for flat in order:
        n, y, x = np.unravel_index(flat, values.shape)
        box = receptive_field(model, layer, int(y), int(x), images.shape[1:3])
        x0, y0, x1, y1 = box
        patches.append(Patch(int(n), (int(y), int(x)), float(values[n, y, x]), box,
                             images[n, y0:y1, x0:x1].astype(np.uint8), int(channel)))
    return patches


def object_features(model: keras.Model, images, objects: Sequence[tuple[int, Sequence[float]]],
                    level: str = "P5") -> np.ndarray:
    """Mean `level` feature over each object's box: float32 `[M, c]`.

    `objects`: `(image index, xyxy box in the model frame px)` pairs; `images` float32
    `[N, S, S, 3]`. A box smaller than a feature cell takes the cell under its centre.
    """
    images = np.asarray(images, np.float32)
    backbone = pixel_model(model)
    maps = np.concatenate([np.asarray(backbone(tf.constant(images[i:i + FEATURE_BATCH]), training=False)[level])
                           for i in range(0, len(images), FEATURE_BATCH)])        # [N, h, w, c]
    stride_y, stride_x = images.shape[1] / maps.shape[1], images.shape[2] / maps.shape[2]
    vectors = []
    for index, (x0, y0, x1, y1) in ((i, tuple(float(v) for v in box)) for i, box in objects):
        row0 = min(int(np.floor(y0 / stride_y)), maps.shape[1] - 1)
        col0 = min(int(np.floor(x0 / stride_x)), maps.shape[2] - 1)
        row1 = max(int(np.ceil(y1 / stride_y)), row0 + 1)
        col1 = max(int(np.ceil(x1 / stride_x)), col0 + 1)
        vectors.append(maps[index, row0:row1, col0:col1].mean(axis=(0, 1)))
    if not vectors:
        return np.zeros((0, maps.shape[-1]), np.float32)
    return np.stack(vectors).astype(np.float32)


def tsne_embedding(features, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE of `features` `[M, d]`: float32 `[M, 2]`, the same for the same seed.

    `perplexity` defaults to `min(30, (M - 1) / 3)`, which t-SNE needs below M. The start
    is random (from `seed`), so the seed alone fixes the picture.
    """
    from sklearn.manifold import TSNE  # scikit-learn loads only when an embedding is asked for

    features = np.asarray(features, np.float64)
    count = len(features)
    if count < 4:
        raise ExplanationError(f"t-SNE needs at least 4 objects, got {count}")
    perplexity = perplexity or min(30.0, max(1.0, (count - 1) / 3.0))
    embedding = TSNE(n_components=2, perplexity=perplexity, init="random", random_state=seed,
                     max_iter=500).fit_transform(features)
    return embedding.astype(np.float32)


def nearest_neighbours(features, query: int, k: int = 5) -> list[int]:
    """Indices of the `k` objects nearest to object `query` by L2 distance of features (query left out)."""
    features = np.asarray(features, np.float32)
    if not 0 <= query < len(features):
        raise ExplanationError(f"query object {query} is out of range: there are {len(features)} objects")
    distances = np.linalg.norm(features - features[query], axis=1)
    distances[query] = np.inf
    return [int(i) for i in np.argsort(distances, kind="stable")[:min(k, len(features) - 1)]]
