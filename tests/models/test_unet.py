"""U-Net from scratch and on a backbone: encoder features, shapes, save/load, a short fit."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from detseg.data.coco import load_coco
from detseg.models.backbones.registry import build_backbone
from detseg.models.segmentation.losses import SegmentationLoss
from detseg.models.segmentation.semantic_segmenter import SegmenterConfigError
from detseg.models.segmentation.unet import UNet, shallow_backbone_features
from detseg.pipelines.dataset import build_dataset

SIZE = 64
NUM_CLASSES = 3


def random_images(count: int = 2, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def feature_sizes(model: UNet) -> dict[str, tuple[int, int, int]]:
    return {name: tuple(tensor.shape[1:]) for name, tensor in model.encoder.output.items()}


def test_scratch_unet_has_one_feature_per_encoder_block_and_full_size_logits():
    model = UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 16, 32, 64))
    assert feature_sizes(model) == {"P0": (64, 64, 8), "P1": (32, 32, 16), "P2": (16, 16, 32), "P3": (8, 8, 64)}
    assert model.decoder_filters == (32, 16, 16)  # three x2 steps from stride 8
    logits = keras.ops.convert_to_numpy(model(random_images()))
    assert logits.shape == (2, SIZE, SIZE, NUM_CLASSES) and logits.dtype == np.float32
    assert model.backbone is None


def test_backbone_unet_adds_the_stride_2_and_4_layers_of_the_backbone():
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    shallow = shallow_backbone_features(backbone)
    # The tiny backbone's stem (stride 2) and first stage (stride 4) end in these layers.
    assert shallow["P1"] is backbone.get_layer("stem_relu").output
    assert shallow["P2"] is backbone.get_layer("stage1_out").output
    model = UNet(NUM_CLASSES, backbone=backbone, decoder_filters=(32, 16, 16, 8, 8))
    assert [name for name in feature_sizes(model)] == ["P1", "P2", "P3", "P4", "P5"]
    assert [size[:2] for size in feature_sizes(model).values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    logits = keras.ops.convert_to_numpy(model(random_images()))
    assert logits.shape == (2, SIZE, SIZE, NUM_CLASSES)


@pytest.mark.parametrize("upsampling", ["nearest", "transpose"])
def test_a_short_decoder_stops_early_and_upsamples_its_logits_bilinearly(upsampling):
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    model = UNet(NUM_CLASSES, backbone=backbone, decoder_filters=(16, 8, 8), upsampling=upsampling)
    # Three x2 steps from stride 32 end at stride 4: P1 is not read, a fixed x4 finishes.
    assert sorted(model.head.input) == ["P2", "P3", "P4", "P5"]
    assert not model.head.get_layer("upsample_x4").trainable
    logits = keras.ops.convert_to_numpy(model(random_images()))
    assert logits.shape == (2, SIZE, SIZE, NUM_CLASSES)


def test_the_encoder_shares_the_backbone_weights_so_freezing_the_backbone_freezes_it():
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    model = UNet(NUM_CLASSES, backbone=backbone, decoder_filters=(16, 16, 8, 8, 8))
    assert {id(w) for w in model.encoder.weights} == {id(w) for w in backbone.weights}
    model.backbone.trainable = False
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.head.trainable_weights}


def test_predict_gives_probabilities_and_the_class_map():
    model = UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 16, 32))
    outputs = model.predict(random_images(4), batch_size=2, verbose=0)
    assert outputs["probabilities"].shape == (4, SIZE, SIZE, NUM_CLASSES)
    assert outputs["class_map"].shape == (4, SIZE, SIZE)
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0, rtol=1e-5)
    chosen = np.take_along_axis(outputs["probabilities"], outputs["class_map"][..., None], -1)[..., 0]
    np.testing.assert_array_equal(chosen, outputs["probabilities"].max(-1))


@pytest.mark.parametrize("with_backbone", [False, True])
def test_save_and_load_round_trip(tmp_path, with_backbone):
    if with_backbone:
        model = UNet(NUM_CLASSES, backbone=build_backbone("tiny", (SIZE, SIZE), alpha=0.5),
                     decoder_filters=(16, 16, 8, 8, 8))
    else:
        model = UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 16, 32))
    rng = np.random.default_rng(1)
    for weight in model.weights:  # away from the initial values, so loading must restore them
        weight.assign(weight + 0.01 * rng.normal(size=weight.shape))
    images = random_images()
    model.save(tmp_path / "unet.keras")
    loaded = keras.saving.load_model(tmp_path / "unet.keras")
    assert isinstance(loaded, UNet)
    # Compared as JSON: a reloaded nested config holds lists where the original had tuples.
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    assert (loaded.backbone is not None) == with_backbone
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-4)


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(SegmenterConfigError, match="multiple of 8"):
        UNet(NUM_CLASSES, image_size=(60, 60), encoder_filters=(8, 16, 32, 64))
    with pytest.raises(SegmenterConfigError, match="decoder_filters takes at most 2 entries"):
        UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 16, 32), decoder_filters=(8, 8, 8))
    with pytest.raises(SegmenterConfigError, match="upsampling"):
        UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 16), upsampling="cubic")
    with pytest.raises(SegmenterConfigError, match="encoder_filters"):
        UNet(NUM_CLASSES, image_size=(SIZE, SIZE), encoder_filters=(8, 0))


@pytest.mark.slow
def test_a_few_steps_on_synthetic_data_lower_the_loss(synthetic_dir):
    keras.utils.set_random_seed(0)
    train = load_coco(synthetic_dir / "annotations" / "instances_train.json")
    batches = build_dataset(train, "semantic", image_size=SIZE, batch_size=8, seed=0).take(2).cache()
    model = UNet(len(train.label_map.names) + 1, image_size=(SIZE, SIZE), encoder_filters=(8, 16, 32))
    loss = SegmentationLoss()
    # XLA compilation costs more than these few steps save.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, jit_compile=False)
    before = np.mean([float(loss(y, model(x))) for x, y in batches])
    model.fit(batches.repeat(), steps_per_epoch=40, epochs=1, verbose=0)
    after = np.mean([float(loss(y, model(x))) for x, y in batches])
    assert np.isfinite(after) and after < 0.8 * before
