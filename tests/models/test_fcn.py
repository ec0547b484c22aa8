"""FCN-32s/16s/8s: bilinear upsampling init, shapes, predictions, save/load, a short fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.data.coco import load_coco
from detseg.models.backbones.registry import build_backbone
from detseg.models.segmentation.bilinear_upsampling import (BilinearUpsampling, UpsamplingFactorError, bilinear_kernel,
                                                            bilinear_taps, bilinear_upsampling_layer)
from detseg.models.segmentation.fcn import FCN, FCN_VARIANTS, build_fcn_head
from detseg.models.segmentation.losses import SegmentationLoss
from detseg.models.segmentation.semantic_segmenter import SegmenterConfigError, SemanticSegmenter
from detseg.pipelines.dataset import build_dataset
from detseg.serving.export import export_saved_model
from detseg.serving.serving_module import serving_module_for

SIZE = 64
NUM_CLASSES = 4


def tiny_backbone(size: int = SIZE) -> keras.Model:
    return build_backbone("tiny", (size, size), alpha=0.5)


def random_images(count: int = 2, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


# --- bilinear initialisation -------------------------------------------------------------

def test_bilinear_taps_are_the_tent_centred_between_the_middle_taps():
    np.testing.assert_allclose(bilinear_taps(2), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(bilinear_taps(4), [0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125])


def test_kernel_is_the_outer_product_per_channel_and_zero_across_channels():
    kernel = bilinear_kernel(2, 3)
    assert kernel.shape == (4, 4, 3, 3)
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    for channel in range(3):
        np.testing.assert_allclose(kernel[:, :, channel, channel], np.outer(tent, tent))
    off_diagonal = kernel * (1 - np.eye(3))[None, None]
    assert not off_diagonal.any()


def test_layer_kernel_is_initialised_to_the_bilinear_kernel():
    layer = bilinear_upsampling_layer(8, 2, name="up")
    layer.build((None, 4, 4, 2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), bilinear_kernel(8, 2))
    assert isinstance(layer.kernel_initializer, BilinearUpsampling)


@pytest.mark.parametrize("factor", [2, 4, 8, 32])
def test_upsampling_a_constant_and_a_ramp_interpolates_away_from_the_borders(factor):
    height, width = 5, 6
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    constant = np.full((height, width), 7.0)
    ramp = 3.0 * rows - 2.0 * cols + 1.0
    images = np.stack([constant, ramp], axis=-1)[None].astype(np.float32)
    upsampled = keras.ops.convert_to_numpy(bilinear_upsampling_layer(factor, 2, name="up")(images))[0]
    assert upsampled.shape == (height * factor, width * factor, 2)
    # Output pixel o sits at input coordinate (o + 0.5) / factor - 0.5 (half-pixel centres).
    out_rows, out_cols = np.meshgrid(np.arange(height * factor), np.arange(width * factor), indexing="ij")
    source_rows = (out_rows + 0.5) / factor - 0.5
    source_cols = (out_cols + 0.5) / factor - 0.5
    expected_ramp = 3.0 * source_rows - 2.0 * source_cols + 1.0
    border = factor // 2  # the only rows/columns that see a single input neighbour
    inner = (slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(upsampled[inner][..., 0], 7.0, rtol=1e-5)
    np.testing.assert_allclose(upsampled[inner][..., 1], expected_ramp[inner], atol=1e-4)


@pytest.mark.parametrize("factor", [0, 3, -2])
def test_odd_or_non_positive_factors_are_refused(factor):
    with pytest.raises(UpsamplingFactorError):
        bilinear_upsampling_layer(factor, 2, name="up")


# --- the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_every_variant_maps_images_to_full_size_logits(variant):
    model = FCN(tiny_backbone(), NUM_CLASSES, variant=variant)
    logits = keras.ops.convert_to_numpy(model(random_images()))
    assert logits.shape == (2, SIZE, SIZE, NUM_CLASSES) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    # Every learnable upsampling and score layer sits in the head; the last upsampling is fixed.
    final = model.head.get_layer({"fcn32s": "upsample_x32", "fcn16s": "upsample_x16",
                                  "fcn8s": "upsample_x8"}[variant])
    assert not final.trainable


def test_predict_gives_probabilities_and_their_argmax():
    model = FCN(tiny_backbone(), NUM_CLASSES, variant="fcn8s")
    images = random_images(4)
    outputs = model.predict(images, batch_size=2, verbose=0)
    probabilities, class_map = outputs["probabilities"], outputs["class_map"]
    assert probabilities.shape == (4, SIZE, SIZE, NUM_CLASSES)
    assert class_map.shape == (4, SIZE, SIZE) and class_map.dtype == np.int32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    # The class map picks a most probable class (float32 softmax may tie two close logits).
    chosen = np.take_along_axis(probabilities, class_map[..., None], axis=-1)[..., 0]
    np.testing.assert_array_equal(chosen, probabilities.max(-1))


def test_skip_scores_start_at_zero_so_fcn8s_begins_as_coarse_as_fcn32s():
    model = FCN(tiny_backbone(), NUM_CLASSES, variant="fcn8s")
    for name in ("score_p4", "score_p3"):
        assert not keras.ops.convert_to_numpy(model.head.get_layer(name).kernel).any()


def test_save_and_load_round_trip(tmp_path):
    model = FCN(tiny_backbone(), NUM_CLASSES, variant="fcn16s", head_filters=16, dropout=0.0)
    images = random_images()
    # Move the weights away from their initial values, so loading has something to prove.
    for weight in model.weights:
        weight.assign(weight + 0.01 * np.random.default_rng(1).normal(size=weight.shape))
    path = tmp_path / "fcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FCN)
    assert loaded.get_config()["variant"] == "fcn16s" and loaded.get_config()["head_filters"] == 16
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-5)


def test_a_plain_segmenter_around_an_fcn_head_round_trips(tmp_path):
    """What the trainer builds: a backbone and a separately built head, no FCN class."""
    backbone = tiny_backbone()
    features = {level: keras.Input(tuple(t.shape[1:]), name=level) for level, t in backbone.output.items()}
    head = build_fcn_head(features, NUM_CLASSES, "fcn16s", 8, 0.0, False)
    model = SemanticSegmenter(encoder=backbone, head=head, num_classes=NUM_CLASSES)
    images = random_images()
    model.save(tmp_path / "segmenter.keras")
    loaded = keras.saving.load_model(tmp_path / "segmenter.keras")
    assert type(loaded) is SemanticSegmenter and loaded.num_classes == NUM_CLASSES
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-5)


@pytest.mark.slow
def test_export_serves_the_class_map_at_the_original_size(tmp_path):
    model = FCN(tiny_backbone(), NUM_CLASSES, variant="fcn8s", head_filters=8)
    names = ["background", "circle", "rectangle", "triangle"]
    module = serving_module_for(model, "semantic", SIZE, names[1:])
    version_dir = export_saved_model(module, tmp_path / "shapes", write_config=False)
    served = tf.saved_model.load(str(version_dir)).signatures["serving_pixels"]
    # A frame-sized batch is not letterboxed, so the served map is the model's own argmax.
    pixels = random_images(2).round().astype(np.uint8)
    outputs = served(pixels=tf.constant(pixels))
    expected = keras.ops.convert_to_numpy(model.segment(pixels.astype(np.float32))["class_map"])
    np.testing.assert_array_equal(outputs["class_map"].numpy(), expected)
    # Another size comes back at that size.
    other = served(pixels=tf.constant(random_images(1, 32)[:, :, :24].round().astype(np.uint8)))
    assert other["class_map"].shape == (1, 32, 24)
    assert [n.decode() for n in other["label_names"].numpy()[0]] == names


def test_freezing_the_backbone_leaves_only_the_head_trainable():
    model = FCN(tiny_backbone(), NUM_CLASSES)
    model.backbone.trainable = False
    trainable = {id(w) for w in model.trainable_weights}
    assert trainable == {id(w) for w in model.head.trainable_weights} and trainable


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(SegmenterConfigError, match="variant"):
        FCN(tiny_backbone(), NUM_CLASSES, variant="fcn4s")
    with pytest.raises(SegmenterConfigError, match="num_classes"):
        FCN(tiny_backbone(), 1)
    images = keras.Input((SIZE, SIZE, 3))
    only_p5 = keras.Model(images, {"P5": keras.layers.AveragePooling2D(32)(images)})
    with pytest.raises(SegmenterConfigError, match=r"lacks feature levels \['P4', 'P3'\]"):
        FCN(only_p5, NUM_CLASSES, variant="fcn8s")


def batch_loss(model, batches, loss) -> float:
    """Mean loss over a few batches, computed eagerly (no extra graph to trace)."""
    return float(np.mean([float(loss(y, model(x, training=False))) for x, y in batches]))


@pytest.mark.slow
def test_a_few_steps_on_synthetic_data_lower_the_loss(synthetic_dir):
    keras.utils.set_random_seed(0)
    train = load_coco(synthetic_dir / "annotations" / "instances_train.json")
    batches = build_dataset(train, "semantic", image_size=SIZE, batch_size=8, seed=0).take(2).cache()
    model = FCN(tiny_backbone(), len(train.label_map.names) + 1, variant="fcn8s", head_filters=32)
    loss = SegmentationLoss()
    # XLA compilation costs more than these few steps save.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, jit_compile=False)
    before = batch_loss(model, batches, loss)
    model.fit(batches.repeat(), steps_per_epoch=40, epochs=1, verbose=0)
    after = batch_loss(model, batches, loss)
    assert np.isfinite(after) and after < 0.8 * before
