"""Transfer learning: blocks, stage 1 (frozen) and stage 2 (top blocks, BatchNorm frozen)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from clsloc_squares import make_square_images
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.clsloc.classification_localization import ClassificationLocalizationModel, build_clsloc_head
from detseg.models.backbones.transfer import (
    TransferError, backbone_blocks, freeze, unfreeze_top_blocks, weights_fingerprint)

TINY_BLOCK_PREFIXES = ["stem_", "stage1_", "stage2_", "stage3_", "stage4_"]


def _snapshot(layers) -> dict[str, np.ndarray]:
    return {weight.path: weight.numpy().copy() for layer in layers for weight in layer.weights}


def _changed(before: dict[str, np.ndarray], layers) -> dict[str, bool]:
    after = _snapshot(layers)
    return {path: not np.array_equal(before[path], after[path]) for path in before}


def _fit_a_few_steps(backbone: keras.Model, head: keras.Model) -> None:
    """Compiles (needed after changing trainable flags) and trains 3 steps of 8 images."""
    model = ClassificationLocalizationModel(backbone, head)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, targets = make_square_images(24, size=64, seed=3)
    model.fit(images, targets, batch_size=8, epochs=1, verbose=0, shuffle=False)


@pytest.fixture
def tiny_and_head():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (64, 64))
    return backbone, build_clsloc_head(feature_shape(backbone), 3, hidden_units=16)


def test_tiny_blocks_are_stem_and_four_stages_without_input_layers(tiny_and_head):
    backbone, _ = tiny_and_head
    blocks = backbone_blocks(backbone)
    assert len(blocks) == len(TINY_BLOCK_PREFIXES)
    for block, prefix in zip(blocks, TINY_BLOCK_PREFIXES):
        assert block and all(layer.name.startswith(prefix) for layer in block)
    in_blocks = [layer.name for block in blocks for layer in block]
    assert len(in_blocks) == len(set(in_blocks))
    assert set(in_blocks) == {layer.name for layer in backbone.layers} - {"images", "pixel_normalization"}


def test_stage_one_changes_no_backbone_weight(tiny_and_head):
    backbone, head = tiny_and_head
    freeze(backbone)
    backbone_before, head_before = _snapshot(backbone.layers), _snapshot(head.layers)
    _fit_a_few_steps(backbone, head)
    assert not any(_changed(backbone_before, backbone.layers).values())
    assert all(_changed(head_before, head.layers).values())


def test_stage_two_trains_only_the_top_blocks_and_no_batchnorm(tiny_and_head):
    backbone, head = tiny_and_head
    freeze(backbone)
    unfrozen = unfreeze_top_blocks(backbone, 2)
    top_layers = {layer.name for block in backbone_blocks(backbone)[-2:] for layer in block}
    batchnorms = {layer.name for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert {layer.name for layer in unfrozen} == top_layers - batchnorms
    before = _snapshot(backbone.layers)
    _fit_a_few_steps(backbone, head)
    changed = _changed(before, backbone.layers)
    for layer in backbone.layers:
        for weight in layer.weights:
            should_change = layer in unfrozen
            assert changed[weight.path] == should_change, (layer.name, weight.name)
    batchnorm_paths = [weight.path for layer in backbone.layers
                       if isinstance(layer, keras.layers.BatchNormalization) for weight in layer.weights]
    assert batchnorm_paths and not any(changed[path] for path in batchnorm_paths)


def test_train_batchnorm_lets_only_the_unfrozen_blocks_statistics_learn(tiny_and_head):
    backbone, head = tiny_and_head
    unfrozen = unfreeze_top_blocks(backbone, 1, train_batchnorm=True)
    top_layers = {layer.name for layer in backbone_blocks(backbone)[-1]}
    assert {layer.name for layer in unfrozen} == top_layers
    before = _snapshot(backbone.layers)
    _fit_a_few_steps(backbone, head)
    changed = _changed(before, backbone.layers)
    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        moved = [changed[weight.path] for weight in layer.weights]
        if layer.name in top_layers:  # moving mean and variance included: they follow the batches
            assert all(moved), layer.name
        else:
            assert not any(moved), layer.name


def test_unfrozen_backbone_runs_batchnorm_in_inference_mode(tiny_and_head):
    backbone, _ = tiny_and_head
    unfreeze_top_blocks(backbone, "all")
    images, _ = make_square_images(4, size=64, seed=5)
    np.testing.assert_allclose(backbone(images, training=True)["P5"], backbone(images, training=False)["P5"],
                               rtol=1e-5, atol=1e-5)


def test_unfreeze_all_makes_every_non_batchnorm_weight_trainable(tiny_and_head):
    backbone, _ = tiny_and_head
    unfreeze_top_blocks(backbone, "all")
    trainable = {weight.path for weight in backbone.trainable_weights}
    expected = {weight.path for layer in backbone.layers
                if not isinstance(layer, keras.layers.BatchNormalization) for weight in layer.weights}
    assert trainable == expected and len(trainable) > 0


def test_unfreeze_zero_is_frozen_and_bad_counts_are_named(tiny_and_head):
    backbone, _ = tiny_and_head
    assert unfreeze_top_blocks(backbone, 0) == []
    assert backbone.trainable_weights == []
    for bad in (-1, 6, "some", 1.5, True):
        with pytest.raises(TransferError, match="unfreeze blocks"):
            unfreeze_top_blocks(backbone, bad)


def test_model_without_known_block_names_is_refused():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="mystery")(inputs), name="odd")
    with pytest.raises(TransferError, match="'odd'"):
        backbone_blocks(model)


def test_weights_fingerprint_follows_the_weights(tmp_path):
    first = build_backbone("tiny", (64, 64))
    path = tmp_path / "tiny.weights.h5"
    first.save_weights(path)
    same = build_backbone("tiny", (64, 64), weights=path)
    assert weights_fingerprint(same) == weights_fingerprint(first)
    kernel = same.get_layer("stage4_pwconv").kernel
    kernel.assign(kernel.numpy() + 1e-3)
    assert weights_fingerprint(same) != weights_fingerprint(first)
    assert weights_fingerprint(build_backbone("tiny", (96, 96), weights=path)) != weights_fingerprint(first)
