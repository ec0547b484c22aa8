"""Backbone weights: local round trips, keras.applications files, offline ImageNet, bad files."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from detseg.models.backbones.weights import imagenet_host_reachable, imagenet_weights_cached
from detseg.core.contract import FEATURE_LEVELS
from detseg.models.backbones.registry import APPLICATIONS, BackboneWeightsError, build_backbone
from detseg.models.backbones.pixel_normalization import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB


def _pixels(size=64, count=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Every weight random, moving variances positive: a file full of non-default values."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.normal(0.0, 0.1, weight.shape)
        if "variance" in weight.name:
            values = np.abs(values) + 0.5
        weight.assign(values.astype(weight.dtype))


def _assert_same_features(first, second, pixels):
    # Eager calls: tracing a predict function costs more than the comparison itself.
    out1, out2 = first(pixels), second(pixels)
    for level in FEATURE_LEVELS:
        np.testing.assert_allclose(out2[level], out1[level], rtol=1e-5, atol=1e-5)


def test_saved_weights_round_trip(tmp_path):
    trained = build_backbone("tiny", (64, 64))
    _randomize(trained)
    path = tmp_path / "tiny.weights.h5"
    trained.save_weights(path)
    loaded = build_backbone("tiny", (64, 64), weights=path)
    _assert_same_features(trained, loaded, _pixels())
    fresh = build_backbone("tiny", (64, 64))
    assert not np.allclose(fresh(_pixels())["P5"], trained(_pixels())["P5"])


def test_saved_weights_load_at_another_image_size(tmp_path):
    trained = build_backbone("tiny", (64, 64))
    _randomize(trained)
    path = tmp_path / "tiny.weights.h5"
    trained.save_weights(path)
    bigger = build_backbone("tiny", (128, 96), weights=str(path))
    for mine, theirs in zip(bigger.weights, trained.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_keras_applications_h5_file_matches_keras_own_model(tmp_path):
    reference = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                               input_shape=(64, 64, 3))
    _randomize(reference)
    path = tmp_path / "mobilenet_v2_notop.h5"
    reference.save(path)  # the legacy HDF5 layout keras.applications files use
    backbone = build_backbone("mobilenet_v2", (64, 64), weights=path, alpha=0.35)
    pixels = _pixels()
    expected = reference(keras.applications.mobilenet_v2.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(backbone(pixels)["P5"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_efficientnet_h5_file_keeps_true_imagenet_normalization(tmp_path):
    reference = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    _randomize(reference)
    normalization = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
    # What the original EfficientNet does: (x / 255 - mean) / std.
    normalization.adapt_mean.assign(np.asarray(IMAGENET_MEAN_RGB, np.float32))
    normalization.adapt_variance.assign(np.square(np.asarray(IMAGENET_STD_RGB, np.float32)))
    normalization.finalize_state()
    path = tmp_path / "efficientnetb0_notop.h5"
    reference.save(path)
    backbone = build_backbone("efficientnet_b0", (64, 64), weights=path)
    pixels = _pixels()
    np.testing.assert_allclose(backbone(pixels)["P5"], reference(pixels), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(imagenet_weights_cached("mobilenet_v2_weights") or imagenet_host_reachable(1.0),
                    reason="only meaningful offline with an empty Keras cache")
def test_imagenet_offline_fails_with_instructions():
    with pytest.raises(BackboneWeightsError) as caught:
        build_backbone("mobilenet_v2", (96, 96), weights="imagenet", alpha=0.35)
    message = str(caught.value)
    assert "mobilenet_v2" in message and "detseg pretrain" in message
    assert "weights: /path/to/mobilenet_v2.weights.h5" in message


def test_tiny_has_no_imagenet_weights():
    with pytest.raises(BackboneWeightsError, match="no ImageNet weights.*detseg pretrain"):
        build_backbone("tiny", (64, 64), weights="imagenet")


def test_weights_of_another_backbone_are_rejected_naming_the_file(tmp_path):
    path = tmp_path / "tiny.weights.h5"
    build_backbone("tiny", (64, 64)).save_weights(path)
    with pytest.raises(BackboneWeightsError, match=f"{path}.*does not fit backbone 'mobilenet_v2'"):
        build_backbone("mobilenet_v2", (64, 64), weights=path, alpha=0.35)


def test_weights_of_another_width_are_rejected(tmp_path):
    path = tmp_path / "tiny_half.weights.h5"
    build_backbone("tiny", (64, 64), alpha=0.5).save_weights(path)
    with pytest.raises(BackboneWeightsError, match="tiny_half.weights.h5"):
        build_backbone("tiny", (64, 64), weights=path)


def test_keras_h5_of_another_family_is_rejected(tmp_path):
    path = tmp_path / "vgg16_notop.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save(path)
    with pytest.raises(BackboneWeightsError, match="vgg16_notop.h5"):
        build_backbone("mobilenet_v2", (64, 64), weights=path, alpha=0.35)


def test_corrupt_missing_and_unknown_files_are_named(tmp_path):
    corrupt = tmp_path / "broken.weights.h5"
    corrupt.write_text("not an HDF5 file")
    with pytest.raises(BackboneWeightsError, match="broken.weights.h5"):
        build_backbone("tiny", (64, 64), weights=corrupt)
    with pytest.raises(BackboneWeightsError, match="missing.weights.h5 does not exist"):
        build_backbone("tiny", (64, 64), weights=tmp_path / "missing.weights.h5")
    unknown = tmp_path / "model.pt"
    unknown.write_bytes(b"\0")
    with pytest.raises(BackboneWeightsError, match="model.pt: unknown kind"):
        build_backbone("tiny", (64, 64), weights=unknown)


def test_every_application_has_an_imagenet_cache_prefix():
    # The prefixes are the start of keras.applications' notop file names.
    assert {spec.imagenet_cache_prefix for spec in APPLICATIONS.values()} == {
        "mobilenet_v2_weights", "resnet50_weights", "efficientnetb0", "vgg16_weights"}
