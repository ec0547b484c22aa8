"""Temporary hooks on the layers of a (nested) Keras model: capture outputs, change activation gradients.

Keras 3 runs a functional model layer by layer through each layer's `__call__`, which
calls `self.call`; assigning `call` (or `activation`) on one layer INSTANCE and deleting
it afterwards changes that layer for the duration of a `with` block, inside every model
that holds it: subclassed task models, nested functional backbones and heads alike.
Nothing is cloned and no weights are copied, which is why this works on detseg's
`TaskModel`s where cloning libraries do not (docs/architecture.md).

- `capture_outputs(layer)`: the layer's outputs of every call inside the block (eager
  tensors, differentiable under a `tf.GradientTape` that watched the input).
- `gradient_rule(model, "guided" | "deconvnet")`: every hidden activation of the model
  keeps its forward value but passes back only positive gradients: times its own local
  derivative ("guided", Springenberg et al. 2015: for ReLU the forward gate times the
  gradient gate) or alone ("deconvnet", Zeiler & Fergus 2014). ReLU and ReLU6 layers and
  activations (EfficientNet-Lite, MobileNetV2, tiny, the R-CNN heads) get exactly the
  rules of the papers; smooth rectifiers (SiLU in the YOLO neck and head, swish in
  EfficientNet-B0, GELU...) get the same gates with their true local derivative, so
  the rule is the one the papers state for ReLU wherever the activation acts like one.
  Output activations (sigmoid, softmax, linear) are left alone: they make the score.
  `"pass_through"` lets every gradient through unchanged (the network as if linear):
  what `features.receptive_field` measures with.
- `replaced_activation(layer, function)`: one layer's activation swapped (a softmax
  classifier's last layer made linear, so its class logit can be climbed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

from detseg.core.contract import FEATURE_LEVELS

GUIDED = "guided"
DECONVNET = "deconvnet"
PASS_THROUGH = "pass_through"  # every gradient passes unchanged: the network as if linear
GRADIENT_RULES = (GUIDED, DECONVNET, PASS_THROUGH)
# Hidden activations, by the function's name (keras.activations.swish is silu).
HIDDEN_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "silu", "gelu", "elu", "selu", "mish",
                      "hard_silu", "hard_swish", "softplus")
# Layer classes that are activations themselves (their `call` is the activation).
ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)


class LayerNotFoundError(ValueError):
    """A layer or pyramid level named by the user is not in the model."""


def nested_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested models and sub-layers of custom layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def pixel_model(model: keras.Model) -> keras.Model:
    """The functional model that takes the pixels: a task model's `backbone` or `encoder`."""
    for name in ("backbone", "encoder"):
        inner = getattr(model, name, None)
        if isinstance(inner, keras.Model):
            return inner
    if isinstance(getattr(model, "inputs", None), list):  # a functional model itself
        return model
    raise LayerNotFoundError(f"model '{model.name}' has no backbone taking pixels")


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer named `name` anywhere in `model`, or the one giving pyramid level `name` (P3..P5)."""
    if name in FEATURE_LEVELS:
        features = pixel_model(model).output
        if isinstance(features, dict) and name in features:
            return features[name]._keras_history.operation
    for layer in nested_layers(model):
        if layer.name == name:
            return layer
    convolutions = [layer.name for layer in nested_layers(model) if isinstance(layer, keras.layers.Conv2D)]
    raise LayerNotFoundError(f"no layer named {name!r} in model '{model.name}': give a pyramid level "
                             f"({', '.join(FEATURE_LEVELS)}) or a layer name such as "
                             f"{', '.join(convolutions[-3:]) or 'a convolution'}")


@contextlib.contextmanager
def capture_outputs(layer: keras.layers.Layer) -> Iterator[list]:
    """Inside the block, every output of `layer` is appended to the yielded list."""
    original = layer.call
    outputs: list = []

    def recording_call(*args, **kwargs):
        result = original(*args, **kwargs)
        outputs.append(result)
        return result

    with _instance_attribute(layer, "call", recording_call):
        yield outputs


def activation_name(function) -> str:
    return getattr(function, "__name__", "")


def gated_activation(activation, rule: str):
    """`activation` with the same forward value and the `rule`'s backward pass (module docstring).

    The local derivative comes from differentiating `activation` itself (elementwise),
    so ReLU gives the step `x > 0`, ReLU6 `0 < x < 6`, SiLU its smooth derivative.
    """
    if rule not in GRADIENT_RULES:
        raise ValueError(f"gradient rule {rule!r}: expected one of {GRADIENT_RULES}")

    @tf.custom_gradient
    def gated(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = activation(x)
        local = tape.gradient(y, x)

        def backward(upstream):
            if rule == PASS_THROUGH:
                return upstream
            positive = tf.nn.relu(upstream)
            return positive * local if rule == GUIDED else positive

        return y, backward

    return gated


@contextlib.contextmanager
def gradient_rule(model: keras.Model, rule: str) -> Iterator[int]:
    """Inside the block, `model`'s hidden activations follow `rule` backwards; yields how many."""
    with contextlib.ExitStack() as stack:
        count = 0
        for layer in nested_layers(model):
            if isinstance(layer, ACTIVATION_LAYERS):
                stack.enter_context(_instance_attribute(layer, "call", _gated_call(layer.call, rule)))
                count += 1
            elif activation_name(getattr(layer, "activation", None)) in HIDDEN_ACTIVATIONS:
                stack.enter_context(_instance_attribute(layer, "activation",
                                                        gated_activation(layer.activation, rule)))
                count += 1
        yield count


@contextlib.contextmanager
def replaced_activation(layer: keras.layers.Layer, function) -> Iterator[None]:
    """Inside the block, `layer.activation` is `function` (e.g. `keras.activations.linear`)."""
    with _instance_attribute(layer, "activation", function):
        yield


def _gated_call(call, rule: str):
    def gated_call(inputs, *args, **kwargs):
        return gated_activation(lambda x: call(x, *args, **kwargs), rule)(inputs)

    return gated_call


@contextlib.contextmanager
def _instance_attribute(layer, name: str, value):
    """Sets `layer.<name>` on the instance for the block, then restores what was there."""
    had_own = name in layer.__dict__
    previous = layer.__dict__.get(name)
    object.__setattr__(layer, name, value)  # no Keras tracking of a plain function
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(layer, name, previous)
        else:
            object.__delattr__(layer, name)
