"""Heads' `init: he_normal | glorot_uniform` (`model.head.init`, every family).

The layers a family's `init` governs are found by building the head (the neck left
out) twice, once with each value: those whose kernel initializer changes with it. Every other conv / dense
layer of the head must have a deliberate initializer of its own (RPN and box-predictor
small normals, FCN's zero skips, bilinear upsampling kernels), never Keras's default
silently left in place; the governed ones must include the named hidden layers; and the
drawn weights follow (He's std is sqrt(2) times Glorot's for a square 3x3 conv). Without
`init` the config says glorot_uniform, Keras's default: every family's head weights were
checked bit-identical to those built before `init` existed (seeded builds, all 340 arrays).

Seen to fail when the YOLO head's branch convs, U-Net's decoder convs or R-CNN's box
head hidden layers were built without the config's `init` (they kept glorot_uniform
under `init: he_normal`).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.task_model import DEFAULT_HEAD_INITIALIZER, HEAD_INITIALIZERS
from detseg.training.config import load_config
from detseg.training.families import FAMILIES

pytestmark = pytest.mark.slow

NUM_CLASSES = 3
INITIALIZER_CLASSES = {"he_normal": keras.initializers.HeNormal, "glorot_uniform": keras.initializers.GlorotUniform}
KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
# The necks (YOLO's PAN-FPN, R-CNN's FPN) are not the head: they keep Keras's default.
NECK_PREFIXES = {"yolo": ("neck_",), "faster_rcnn": ("lateral_", "output_"), "mask_rcnn": ("lateral_", "output_")}
# Hidden layers (by name) each family's init must reach, beyond whatever else it reaches.
MUST_FOLLOW = {
    "yolo": ("head_P3_box1_conv", "head_P5_class2_conv", "head_P4_box_pred"),
    "ssd": ("head_P3_shared_conv", "extra_P6_down_conv"),
    "clsloc": ("class_hidden", "box_reduce", "box_hidden"),
    "fcn": ("head_conv", "score_p5"),
    "unet": ("decoder0_conv1", "decoder1_conv2", "score"),
    "faster_rcnn": ("box_fc1", "box_fc2"),
    "mask_rcnn": ("box_fc1", "mask_conv1", "mask_logits"),
}


@functools.lru_cache(maxsize=None)  # building a head costs seconds: each is built once per session
def kernel_layers(family: str, init: str) -> dict[str, keras.layers.Layer]:
    """`{layer name: layer}` of every conv / dense layer in the family's smoke-config head (no neck)."""
    config = load_config(f"smoke/{family}", [f"model.head.init={init}"])
    size = config.model.image_size
    backbone = build_backbone(config.model.backbone, (size, size), None)
    spec = FAMILIES[family]
    shapes = {level: feature_shape(backbone, level) for level in spec.bottleneck_levels}
    keras.utils.set_random_seed(1)
    head = spec.build_head(shapes, NUM_CLASSES, config.model.head)
    return {layer.name: layer for layer in head._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, KERNEL_LAYERS) and not layer.name.startswith(NECK_PREFIXES.get(family, ()))}


def test_the_default_is_what_the_heads_used_before():
    assert DEFAULT_HEAD_INITIALIZER == "glorot_uniform" and set(HEAD_INITIALIZERS) == set(INITIALIZER_CLASSES)
    for family in FAMILIES:
        assert load_config(f"smoke/{family}").model.head.init == DEFAULT_HEAD_INITIALIZER


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_kernel_initializers_follow_init(family):
    he, glorot = kernel_layers(family, "he_normal"), kernel_layers(family, "glorot_uniform")
    assert set(he) == set(glorot)
    governed = {name for name in he
                if isinstance(he[name].kernel_initializer, keras.initializers.HeNormal)
                and isinstance(glorot[name].kernel_initializer, keras.initializers.GlorotUniform)}
    assert set(MUST_FOLLOW[family]) <= governed, sorted(set(MUST_FOLLOW[family]) - governed)
    for name in set(he) - governed:  # a deliberate start of its own, the same under both values
        kind = type(he[name].kernel_initializer)
        assert kind is type(glorot[name].kernel_initializer), name
        assert kind not in (keras.initializers.GlorotUniform, keras.initializers.HeNormal), (name, kind)


def test_he_normal_weights_are_wider_than_glorot_ones_by_sqrt_2():
    """A 3x3 conv with as many inputs as outputs: He std sqrt(2 / 9c), Glorot sqrt(2 / 18c)."""
    name = "head_P3_box2_conv"  # box_width -> box_width channels
    he, glorot = kernel_layers("yolo", "he_normal")[name], kernel_layers("yolo", "glorot_uniform")[name]
    assert he.kernel.shape[2] == he.kernel.shape[3]
    ratio = float(np.std(he.kernel.numpy()) / np.std(glorot.kernel.numpy()))
    assert ratio == pytest.approx(np.sqrt(2.0), rel=0.1)


def test_an_unknown_init_is_refused_naming_the_key():
    from detseg.training.dataclass_yaml import ConfigError

    with pytest.raises(ConfigError, match="model.head.init"):
        load_config("smoke/unet", ["model.head.init=lecun_normal"])
