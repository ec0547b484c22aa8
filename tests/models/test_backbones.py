"""Backbones: pyramid strides and shapes, normalization inside the model, bad requests."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from detseg.core.contract import FEATURE_LEVELS, FEATURE_STRIDES
from detseg.models.backbones.registry import BACKBONE_NAMES, BackboneError, build_backbone, feature_shape
from detseg.models.backbones.pixel_normalization import PixelNormalization
from detseg.models.backbones.transfer import backbone_blocks

SHAPE_TEST_SIZE = (64, 96)
# P3/P4/P5 channels, from each architecture's published layer widths.
EXPECTED_CHANNELS = {
    "tiny": (32, 64, 128),
    "mobilenet_v2": (192, 576, 1280),
    "resnet50": (512, 1024, 2048),
    "efficientnet_b0": (40, 112, 1280),
    "vgg16": (512, 512, 512),
    "efficientnet_lite0": (40, 112, 1280),
    "efficientnet_lite1": (40, 112, 1280),
    "efficientnet_lite2": (48, 120, 1280),
}
# keras.applications' own preprocessing for each family.
KERAS_PREPROCESS = {
    "mobilenet_v2": keras.applications.mobilenet_v2.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    # EfficientNet's preprocess_input is a pass-through: the network normalizes inside,
    # like the original implementation, with torch-style ImageNet statistics.
    "efficientnet_b0": lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch"),
}


@pytest.fixture(scope="module")
def random_init_backbone():
    """`name -> backbone` at `SHAPE_TEST_SIZE`, weights=None, built once per module; read-only."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_backbone(name, SHAPE_TEST_SIZE)
        return cache[name]

    return get


# (number of blocks, first layer of the first block after the stem, last layer): a stem,
# the architecture's blocks (ResNet50 3+4+6+3 residual blocks, MobileNetV2 17 inverted
# residual blocks, EfficientNet-B0 and -Lite0 1+2+2+3+3+4+1 MBConv blocks, Lite1 and Lite2
# 1+3+3+4+4+5+1, VGG16 5 stages), a top.
EXPECTED_BLOCKS = {
    "mobilenet_v2": (1 + 17 + 1, "expanded_conv_depthwise", "out_relu"),
    "resnet50": (1 + 16, "conv2_block1_1_conv", "conv5_block3_out"),
    "efficientnet_b0": (1 + 16 + 1, "block1a_dwconv", "top_activation"),
    "vgg16": (5, "block2_conv1", "block5_pool"),
    "efficientnet_lite0": (1 + 16 + 1, "block1a_dwconv", "top_activation"),
    "efficientnet_lite1": (1 + 21 + 1, "block1a_dwconv", "top_activation"),
    "efficientnet_lite2": (1 + 21 + 1, "block1a_dwconv", "top_activation"),
}


def _raw_pixels(count=2, size=SHAPE_TEST_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, *size, 3)).astype(np.float32)


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_pyramid_levels_have_strides_8_16_32(name, random_init_backbone):
    backbone = random_init_backbone(name)
    height, width = SHAPE_TEST_SIZE
    assert backbone.name == f"{name}_backbone"
    assert tuple(backbone.input_shape) == (None, height, width, 3)
    assert sorted(backbone.output) == sorted(FEATURE_LEVELS)
    for level, channels in zip(FEATURE_LEVELS, EXPECTED_CHANNELS[name]):
        stride = FEATURE_STRIDES[level]
        assert feature_shape(backbone, level) == (height // stride, width // stride, channels)


def test_tiny_forward_pass_gives_the_declared_shapes():
    backbone = build_backbone("tiny", (128, 64))
    features = backbone(_raw_pixels(3, (128, 64)))
    assert {level: tuple(value.shape) for level, value in features.items()} == {
        "P3": (3, 16, 8, 32), "P4": (3, 8, 4, 64), "P5": (3, 4, 2, 128)}
    assert all(value.dtype == "float32" for value in features.values())


def test_tiny_is_small_and_alpha_scales_it():
    assert 50_000 < build_backbone("tiny", (64, 64)).count_params() < 200_000
    narrow = build_backbone("tiny", (64, 64), alpha=0.5)
    assert feature_shape(narrow, "P5") == (2, 2, 64)


@pytest.mark.parametrize("name", sorted(KERAS_PREPROCESS))
def test_normalization_inside_equals_keras_preprocess_input(name, random_init_backbone):
    backbone = random_init_backbone(name)
    normalizers = [layer for layer in backbone.layers
                   if isinstance(layer, (PixelNormalization, keras.layers.Normalization))]
    assert normalizers, "the backbone must normalize its input itself"
    normalize = keras.Model(backbone.input, normalizers[-1].output)
    pixels = _raw_pixels()
    expected = KERAS_PREPROCESS[name](pixels.copy())
    np.testing.assert_allclose(normalize(pixels), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_pixel_normalization_modes_match_imagenet_utils(mode):
    pixels = _raw_pixels(1, (4, 5))
    expected = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(PixelNormalization(mode)(pixels), expected, rtol=1e-5, atol=1e-4)


def test_saved_and_reloaded_backbone_takes_raw_pixels(tmp_path):
    backbone = build_backbone("tiny", (64, 64))
    path = tmp_path / "tiny_backbone.keras"
    backbone.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.layers[1], PixelNormalization)
    pixels = _raw_pixels(2, (64, 64))
    original, restored = backbone(pixels), reloaded(pixels)
    for level in FEATURE_LEVELS:
        np.testing.assert_allclose(restored[level], original[level], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(100, 64), (64, 0), (64,), "64"])
def test_image_size_must_be_multiples_of_32(size):
    with pytest.raises(BackboneError, match="image_size"):
        build_backbone("tiny", size)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BackboneError, match="'resnet18'.*mobilenet_v2"):
        build_backbone("resnet18", (64, 64))


def test_alpha_only_where_the_family_has_one():
    with pytest.raises(BackboneError, match="alpha"):
        build_backbone("resnet50", (64, 64), alpha=0.5)


@pytest.mark.parametrize("name", sorted(EXPECTED_BLOCKS))
def test_application_blocks_follow_the_architecture(name, random_init_backbone):
    backbone = random_init_backbone(name)
    blocks = backbone_blocks(backbone)
    count, first_after_stem, last = EXPECTED_BLOCKS[name]
    assert len(blocks) == count
    assert blocks[1][0].name == first_after_stem
    assert blocks[-1][-1].name == last
    weighted = {layer.name for layer in backbone.layers if layer.weights
                and not isinstance(layer, keras.layers.Normalization)}
    assert weighted <= {layer.name for block in blocks for layer in block}
