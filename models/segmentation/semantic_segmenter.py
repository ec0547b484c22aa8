"""`SemanticSegmenter`: what FCN and U-Net share as Keras task models.

A segmenter is a `TaskModel` made of two nested functional models, so training can treat them
apart (bottleneck training caches the encoder's outputs and trains the head alone):

    images float32 [B, H, W, 3], raw RGB 0..255 (normalization is inside the encoder)
      -> encoder: {feature name: [B, H/s, W/s, c_s]}   (a backbone, or the model's own)
      -> head:    logits float32 [B, H, W, C]          (C classes, background included)

Calling the model gives the logits (what `SegmentationLoss`, given to `compile`, takes).
`predict`/`predict_step` and `segment` give `{"logits", "probabilities": float32
[B, H, W, C], "class_map": int32 [B, H, W]}`, where class map value 0 is background and `i + 1` the
contiguous class `i`, matching the pipelines' semantic targets; the export serves that.

Why a subclassed model around two functional ones rather than one functional graph: a
functional subclass of `TaskModel` would make Keras rewrite `TaskModel`'s own bases into
`Functional` (`keras.Model.__init__` injects it into the class hierarchy), turning every
other task model functional too.

The base class is usable on its own, around any encoder and head (the trainer builds
it from a backbone and a head it trained on cached features); its config then holds both
nested models. Subclasses (FCN, U-Net) build the graph in `__init__` and keep only their
constructor arguments in `get_config()`; `from_config` (`TaskModel`'s) rebuilds nested
models from their serialized form.
"""

from __future__ import annotations

import keras
from keras import ops

from detseg.models.task_model import TaskModel

PROBABILITIES = "probabilities"
CLASS_MAP = "class_map"
LOGITS = "logits"


class SegmenterConfigError(ValueError):
    """A segmentation model was asked for with bad arguments; the message names which."""


def check_num_classes(num_classes) -> int:
    """`num_classes` as an int >= 2 (background plus at least one class)."""
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise SegmenterConfigError(
            f"num_classes must be an integer >= 2 (background + classes), got {num_classes!r}")
    return int(num_classes)


def image_input_like(encoder: keras.Model) -> keras.KerasTensor:
    """A fresh `"images"` input of the encoder's input shape (float32 `[B, H, W, 3]`)."""
    shape = tuple(encoder.input.shape[1:])
    if len(shape) != 3 or shape[0] is None or shape[1] is None:
        raise SegmenterConfigError(
            f"encoder '{encoder.name}' must take a fixed-size image batch [B, H, W, 3], "
            f"got input shape {encoder.input.shape}")
    return keras.Input(shape=shape, dtype="float32", name="images")


def feature_inputs(encoder: keras.Model) -> dict[str, keras.KerasTensor]:
    """One `keras.Input` per encoder output, same names and shapes: the head's inputs."""
    outputs = encoder.output
    if not isinstance(outputs, dict):
        raise SegmenterConfigError(f"encoder '{encoder.name}' must return a dict of feature maps")
    return {name: keras.Input(shape=tuple(tensor.shape[1:]), name=name)
            for name, tensor in outputs.items()}


def float32_logits(x, name: str = "logits"):
    """Keeps the logits float32 under a mixed-precision policy (softmax/loss stay exact)."""
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


@keras.saving.register_keras_serializable(package="detseg")
class SemanticSegmenter(TaskModel):
    """An `images -> logits` task model made of the functional `encoder` and `head`.

    Args:
        encoder: functional model, raw pixels `[B, H, W, 3]` -> dict of feature maps.
        head: functional model, a dict of some of those features (by name) -> logits
            `[B, H, W, C]`.
        num_classes: `C`, background included.

    Subclasses call `super().__init__(encoder=..., head=..., num_classes=..., **kwargs)`
    after building both nested models.
    """

    nested_model_keys = ("encoder", "head")

    def __init__(self, *, encoder: keras.Model, head: keras.Model, num_classes: int, **kwargs):
        image_input_like(encoder)  # checks the encoder takes fixed-size images
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.num_classes = num_classes
        self.built = True  # the nested models hold every variable

    def call(self, inputs, training=False):
        """Raw pixels `[B, H, W, 3]` -> logits `[B, H, W, C]`."""
        features = self.encoder(inputs, training=training)
        # The head declares the levels it reads (a short U-Net decoder skips P1, P2).
        return self.head({name: features[name] for name in self.head.input}, training=training)

    def segment(self, images) -> dict:
        """Raw pixels float32 `[B, H, W, 3]` -> `{"logits", "probabilities", "class_map"}` (module doc).

        The logits come too: the export resamples them (not the probabilities) to the
        original size before the argmax, as they keep the resolution that a float32
        softmax of near-equal logits loses to ties.
        """
        logits = self(images, training=False)
        return {LOGITS: logits, PROBABILITIES: ops.softmax(logits, axis=-1),
                CLASS_MAP: ops.cast(ops.argmax(logits, axis=-1), "int32")}

    def predict_outputs(self, images) -> dict:
        return self.segment(images)

    def get_config(self):
        # The nested models of `nested_model_keys`: encoder and head here; subclasses that
        # build both from their own arguments name only those (FCN, U-Net: the backbone).
        return {**super().get_config(), "num_classes": self.num_classes}
