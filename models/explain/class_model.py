"""Class model visualization: the image a classifier finds most like one class (gradient ascent).

    result = class_model_visualization(clsloc_class_logit(model, 2), (128, 128))
    result.image        # uint8 [H, W, 3]
    result.scores       # the class logit before the first step and after each

Simonyan et al. (2014): start from a grey image and climb `S_c(I) - l2 * ||I||^2`, where
`S_c` is the class's unnormalized score (the logit, so that lowering the other classes
cannot raise it) and `I` the image in -1..1 around mid-grey. Optional, after Yosinski et
al. (2015): `jitter` (a random shift of up to that many pixels before each step, so no
single pixel pattern wins) and `blur_every` (a Gaussian blur of the image every that many
steps, which keeps high frequencies down). Each step moves the image by `step_size`
times the gradient divided by its RMS, so the settings work for any model's scale.

Scores come from `clsloc_class_logit` (the cls+loc head) or `classifier_logit` (any
softmax classifier, e.g. `imagenet_classifier("efficientnet_lite0")` with its offline
ImageNet weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from detseg.models.backbones.efficientnet_lite import efficientnet_lite_classifier
from detseg.models.backbones.efficientnet_lite_weights import load_imagenet_classifier_weights
from detseg.models.clsloc.classification_localization import FEATURE_LEVEL, ClassificationLocalizationModel
from detseg.models.explain.layer_hooks import replaced_activation
from detseg.models.explain.targets import ExplanationError, Scores

MID_GREY = 127.5


@dataclass(frozen=True)
class AscentOptions:
    """Gradient ascent settings (module docstring); `seed` fixes the start noise and the jitter.

    `start_noise`: standard deviation of the start image around mid-grey (in -1..1 units):
    an exactly grey image normalizes to zero, where every bias-free ReLU has no gradient.
    """

    steps: int = 64
    step_size: float = 0.05
    l2: float = 1e-4
    jitter: int = 0
    blur_every: int = 0
    blur_sigma: float = 0.8
    start_noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.step_size <= 0 or self.l2 < 0 or self.jitter < 0 or self.blur_every < 0:
            raise ExplanationError(f"class model options out of range: {self}")


@dataclass
class ClassModel:
    """The climbed image (uint8 `[H, W, 3]`) and the score before the first step and after each."""

    image: np.ndarray
    scores: list[float] = field(default_factory=list)


def clsloc_class_logit(model: ClassificationLocalizationModel, class_index: int) -> Scores:
    """`images -> [B]` logit of `class_index` in the cls+loc head (before its softmax)."""
    if not 0 <= int(class_index) < model.num_classes:
        raise ExplanationError(f"class {class_index} is out of range: the model has {model.num_classes} classes")

    def score(images):
        features = model.backbone(images, training=False)[FEATURE_LEVEL]
        return model.head(features, training=False)["class_logits"][:, int(class_index)]

    return score


def classifier_logit(classifier: keras.Model, class_index: int) -> Scores:
    """`images -> [B]` logit of `class_index` of a classifier whose last layer is a softmax Dense."""
    last = classifier.layers[-1]
    if getattr(getattr(last, "activation", None), "__name__", "") != "softmax":
        raise ExplanationError(f"classifier '{classifier.name}': its last layer '{last.name}' is not a softmax")

    def score(images):
        with replaced_activation(last, keras.activations.linear):
            return classifier(images, training=False)[:, int(class_index)]

    return score


def imagenet_classifier(name: str = "efficientnet_lite0", image_size: tuple[int, int] | None = None) -> keras.Model:
    """An EfficientNet-Lite ImageNet classifier with its weights, offline (`detseg[weights]`)."""
    classifier = efficientnet_lite_classifier(name, image_size)
    load_imagenet_classifier_weights(classifier, name)
    return classifier


def class_model_visualization(score: Scores, image_size: tuple[int, int],
                              options: AscentOptions = AscentOptions()) -> ClassModel:
    """Gradient ascent of `score` from a grey image of `image_size = (H, W)` (module docstring)."""
    rng = np.random.default_rng(options.seed)
    height, width = (int(side) for side in image_size)
    unit = tf.Variable(rng.normal(0.0, options.start_noise, (1, height, width, 3)).astype(np.float32))  # image in -1..1
    kernel = _gaussian_kernel(options.blur_sigma) if options.blur_every else None
    scores = [float(score(_pixels(unit))[0])]
    for step in range(options.steps):
        shift = rng.integers(-options.jitter, options.jitter + 1, 2) if options.jitter else (0, 0)
        with tf.GradientTape() as tape:
            shifted = tf.roll(unit, shift=[int(shift[0]), int(shift[1])], axis=[1, 2])
            objective = tf.reduce_sum(score(_pixels(shifted))) - options.l2 * tf.reduce_sum(tf.square(unit))
        gradient = tape.gradient(objective, unit)
        rms = tf.sqrt(tf.reduce_mean(tf.square(gradient))) + 1e-12
        unit.assign(tf.clip_by_value(unit + options.step_size * gradient / rms, -1.0, 1.0))
        if kernel is not None and (step + 1) % options.blur_every == 0:
            unit.assign(_blurred(unit, kernel))
        scores.append(float(score(_pixels(unit))[0]))
    image = np.clip(np.round(_pixels(unit)[0].numpy()), 0, 255).astype(np.uint8)
    return ClassModel(image, scores)


def _pixels(unit):
    return MID_GREY + MID_GREY * unit


def _gaussian_kernel(sigma: float) -> tf.Tensor:
    radius = max(1, int(round(2 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    line = np.exp(-0.5 * (offsets / max(sigma, 1e-3)) ** 2)
    square = np.outer(line, line) / np.outer(line, line).sum()
    return tf.constant(np.tile(square[:, :, np.newaxis, np.newaxis], (1, 1, 3, 1)))


def _blurred(unit, kernel) -> tf.Tensor:
    return tf.nn.depthwise_conv2d(unit, kernel, strides=[1, 1, 1, 1], padding="SAME")
