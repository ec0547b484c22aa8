"""Maps of one score onto the pixels: saliency, guided backprop, deconvnet, Grad-CAM, occlusion.

Every function takes an `ExplanationTarget` (`targets`: "the score" of one detection,
class or region) and one image float32 `[S, S, 3]` in 0..255 in the model frame, and
returns numpy maps of the frame's size:

- `saliency_map`: `|d score / d pixel|`, max over the colour channels: `[S, S]` >= 0
  (Simonyan et al. 2014).
- `guided_backprop` / `deconvnet`: the gradient with every hidden activation passing back
  only positive gradients (`layer_hooks.gradient_rule`): `[S, S, 3]`, signed.
- `grad_cam`: the feature maps of one layer weighted by their spatially averaged
  gradients, summed, rectified (Selvaraju et al. 2017): `[S, S]` >= 0 (bilinearly
  upsampled) and the layer's own `[h, w]` map.
- `occlusion_map`: the drop of the target's `occlusion_score` when a grey square of
  `patch` px covers each place (stride `stride`), averaged where squares overlap
  (Zeiler & Fergus 2014): `[S, S]`, positive where covering hurts the score.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from detseg.models.explain.layer_hooks import (DECONVNET, GUIDED, capture_outputs, find_layer,
                                               gradient_rule)
from detseg.models.explain.targets import ExplanationError, ExplanationTarget

OCCLUSION_GREY = 127.5  # mid-grey: no colour, no edge of its own
OCCLUSION_BATCH = 32


def _batch(image) -> tf.Tensor:
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ExplanationError(f"expected one image [H, W, 3], got shape {image.shape}")
    return tf.constant(image[np.newaxis])


def input_gradient(target: ExplanationTarget, image, model: keras.Model | None = None,
                   rule: str | None = None) -> np.ndarray:
    """`d score / d pixels` float32 `[S, S, 3]`; with `rule`, under `gradient_rule(model, rule)`."""
    pixels = _batch(image)
    rules = gradient_rule(model, rule) if rule else contextlib.nullcontext()
    with rules:
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            score = tf.reduce_sum(target.score(pixels))
        gradient = tape.gradient(score, pixels)
    if gradient is None:  # the score does not depend on the pixels at all
        return np.zeros(pixels.shape[1:], np.float32)
    return gradient[0].numpy()


def saliency_map(target: ExplanationTarget, image) -> np.ndarray:
    """`|d score / d pixel|` max over channels: float32 `[S, S]`."""
    return np.abs(input_gradient(target, image)).max(axis=-1)


def guided_backprop(model: keras.Model, target: ExplanationTarget, image) -> np.ndarray:
    """Guided backpropagation of the score to the pixels: float32 `[S, S, 3]`."""
    return input_gradient(target, image, model, GUIDED)


def deconvnet(model: keras.Model, target: ExplanationTarget, image) -> np.ndarray:
    """The deconvnet backward pass (positive gradients only, no forward gate): `[S, S, 3]`."""
    return input_gradient(target, image, model, DECONVNET)


def grad_cam(model: keras.Model, target: ExplanationTarget, image, layer: str = "P5"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the score at `layer` (a pyramid level P3..P5 or a layer name).

    Returns `(cam [S, S], cam_at_layer [h, w])`, both >= 0 (zero everywhere when no
    feature map raises the score).
    """
    pixels = _batch(image)
    hooked = find_layer(model, layer)
    with capture_outputs(hooked) as outputs:
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            score = tf.reduce_sum(target.score(pixels))
    if not outputs or not isinstance(outputs[-1], tf.Tensor) or outputs[-1].shape.rank != 4:
        raise ExplanationError(f"layer {layer!r} ({hooked.name}) gives no [B, h, w, c] feature map "
                               f"on the way to the score: pick a convolutional layer or P3..P5")
    activations = outputs[-1]
    gradients = tape.gradient(score, activations)
    if gradients is None:
        raise ExplanationError(f"the score does not depend on layer {layer!r} ({hooked.name})")
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)          # [1, 1, 1, c]
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))[0]        # [h, w]
    upsampled = tf.image.resize(cam[..., tf.newaxis], pixels.shape[1:3], method="bilinear")[..., 0]
    return upsampled.numpy(), cam.numpy()


def occlusion_positions(length: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one side so that squares of `patch` cover all `length` pixels."""
    if patch < 1 or stride < 1:
        raise ExplanationError(f"occlusion patch and stride must be >= 1, got {patch} and {stride}")
    patch = min(patch, length)
    offsets = list(range(0, length - patch + 1, stride))
    if offsets[-1] != length - patch:
        offsets.append(length - patch)
    return offsets


def occlusion_map(target: ExplanationTarget, image, patch: int = 16, stride: int = 8,
                  grey: float = OCCLUSION_GREY, batch_size: int = OCCLUSION_BATCH) -> np.ndarray:
    """Score drop when a grey `patch` x `patch` square covers each pixel: float32 `[S, S]`."""
    image = np.asarray(image, np.float32)
    height, width = image.shape[:2]
    base = float(target.occlusion_score(_batch(image))[0])
    squares = [(y, x) for y in occlusion_positions(height, patch, stride)
               for x in occlusion_positions(width, patch, stride)]
    side_y, side_x = min(patch, height), min(patch, width)
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for start in range(0, len(squares), batch_size):
        chunk = squares[start:start + batch_size]
        occluded = np.repeat(image[np.newaxis], len(chunk), axis=0)
        for row, (y, x) in enumerate(chunk):
            occluded[row, y:y + side_y, x:x + side_x] = grey
        scores = np.asarray(target.occlusion_score(tf.constant(occluded)))
        for (y, x), score in zip(chunk, scores):
            total[y:y + side_y, x:x + side_x] += base - float(score)
            count[y:y + side_y, x:x + side_x] += 1.0
    return total / np.maximum(count, 1.0)
