"""`SemanticSegmenter`: what FCN and U-Net share as Keras task models.

A segmenter is a functional model made of two nested models, so training can treat them
apart (bottleneck training caches the encoder's outputs and trains the head alone):

    images float32 [B, H, W, 3], raw RGB 0..255 (normalization is inside the encoder)
      -> encoder: {feature name: [B, H/s, W/s, c_s]}   (a backbone, or the model's own)
      -> head:    logits float32 [B, H, W, C]          (C classes, background included)

Calling the model gives the logits (what `SegmentationLoss` takes). `predict` and
`segment` give `{"probabilities": float32 [B, H, W, C], "class_map": int32 [B, H, W]}`,
where class map value 0 is background and `i + 1` the contiguous class `i`, matching the
pipelines' semantic targets. For serving, `infer(pixels)` returns the same dict.

The base class is usable on its own, around any encoder and head (the trainer builds
it from a backbone and a head it trained on cached features); its config then holds both
nested models. Subclasses (FCN, U-Net) build the graph in `__init__` and keep only their
constructor arguments in `get_config()`; `from_config` rebuilds nested models from their
serialized form.
"""

from __future__ import annotations

import keras
from keras import ops

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
class SemanticSegmenter(keras.Model):
    """A functional `images -> logits` model made of `encoder` and `head`.

    Args:
        encoder: functional model, raw pixels `[B, H, W, 3]` -> dict of feature maps.
        head: functional model, a dict of some of those features (by name) -> logits
            `[B, H, W, C]`.
        num_classes: `C`, background included.

    Subclasses call `super().__init__(encoder=..., head=..., num_classes=..., **kwargs)`
    after building both nested models.
    """

    def __init__(self, *, encoder: keras.Model, head: keras.Model, num_classes: int, **kwargs):
        images = image_input_like(encoder)
        features = encoder(images)
        # The head declares the levels it reads (a short U-Net decoder skips P1, P2).
        logits = head({name: features[name] for name in head.input})
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.encoder = encoder
        self.head = head
        self.num_classes = num_classes

    def segment(self, images) -> dict:
        """Raw pixels float32 `[B, H, W, 3]` -> `{"probabilities", "class_map"}` (module doc)."""
        logits = self(images, training=False)
        return {PROBABILITIES: ops.softmax(logits, axis=-1),
                CLASS_MAP: ops.cast(ops.argmax(logits, axis=-1), "int32")}

    def infer(self, pixels) -> dict:
        """Serving entry point: `segment` plus the logits, for `serving.ServingModule(infer=...)`."""
        logits = self(pixels, training=False)
        return {LOGITS: logits, PROBABILITIES: ops.softmax(logits, axis=-1),
                CLASS_MAP: ops.cast(ops.argmax(logits, axis=-1), "int32")}

    def predict_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.segment(images)

    def base_config(self) -> dict:
        """Name and trainable flag, what every subclass's `get_config` starts from."""
        return {"name": self.name, "trainable": self.trainable}

    def get_config(self):
        return {**self.base_config(), "encoder": serialize_model(self.encoder),
                "head": serialize_model(self.head), "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in NESTED_MODEL_KEYS:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects)
        return cls(**config)


NESTED_MODEL_KEYS = ("backbone", "encoder", "head")  # config entries that hold a serialized model


def serialize_model(model: keras.Model | None):
    """A nested model as a config dict (None stays None), for `get_config`."""
    return None if model is None else keras.saving.serialize_keras_object(model)
