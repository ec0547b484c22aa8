"""Classification + localization: contract, hand-computed losses and metrics, stages, save/load."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from clsloc_squares import make_square_images
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.clsloc.classification_localization import (
    ClassificationLocalizationError, ClassificationLocalizationModel, build_classifier,
    build_clsloc_head)
from detseg.models.clsloc.losses import NO_OBJECT, class_hits, localization_hits
from detseg.models.backbones.transfer import freeze

SIZE = 64
# A frame of height 100 and width 200 for hand-computed values: x / 200, y / 100.
FRAME = (100, 200)


def _features_only_model(**options):
    head = build_clsloc_head((2, 2, 8), 3, hidden_units=8)
    return ClassificationLocalizationModel(None, head, image_size=FRAME, **options)


@pytest.fixture
def tiny_model():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (SIZE, SIZE))
    head = build_clsloc_head(feature_shape(backbone), 3, hidden_units=32)
    return ClassificationLocalizationModel(backbone, head)


def test_outputs_are_probabilities_and_ordered_pixel_boxes(tiny_model):
    images, _ = make_square_images(5, SIZE)
    outputs = tiny_model(images)
    assert set(outputs) == {"class_probabilities", "box"}
    assert outputs["class_probabilities"].shape == (5, 3) and outputs["box"].shape == (5, 4)
    np.testing.assert_allclose(np.sum(outputs["class_probabilities"], axis=-1), 1.0, rtol=1e-5)
    box = outputs["box"].numpy()
    assert np.all(box >= 0) and np.all(box <= SIZE)
    assert np.all(box[:, 0] <= box[:, 2]) and np.all(box[:, 1] <= box[:, 3])
    assert tiny_model.num_classes == 3 and tiny_model.image_size == (SIZE, SIZE)


@pytest.mark.parametrize("box_loss, box_term", [
    # true [0, 0, 50, 50] px = [0, 0, .25, .5]; predicted [10, 0, 50, 50] px = [.05, 0, .25, .5]:
    # smooth L1 (delta .1) of a .05 difference = .5 * .05^2 / .1; GIoU = IoU = 2000 / 2500.
    ("smooth_l1", 0.5 * 0.05 ** 2 / 0.1),
    ("giou", 1 - 0.8),
])
def test_loss_by_hand(box_loss, box_term):
    model = _features_only_model(box_loss=box_loss, class_loss_weight=2.0, box_loss_weight=3.0)
    targets = {"class": np.array([0], np.int32), "box": np.array([[0, 0, 50, 50]], np.float32)}
    predictions = {"class_probabilities": np.array([[0.5, 0.25, 0.25]], np.float32),
                   "box": np.array([[10, 0, 50, 50]], np.float32)}
    loss = model.compute_loss(y=targets, y_pred=predictions)
    np.testing.assert_allclose(float(loss), 2.0 * math.log(2.0) + 3.0 * box_term, rtol=1e-5)


def test_smooth_l1_is_linear_beyond_delta():
    model = _features_only_model(class_loss_weight=0.0)
    targets = {"class": np.array([0], np.int32), "box": np.array([[0, 0, 50, 50]], np.float32)}
    # y_max 100 px instead of 50 px: a difference of .5 of the frame height -> .5 - .1 / 2.
    predictions = {"class_probabilities": np.array([[1.0, 0.0, 0.0]], np.float32),
                   "box": np.array([[0, 0, 50, 100]], np.float32)}
    np.testing.assert_allclose(float(model.compute_loss(y=targets, y_pred=predictions)), 0.45, rtol=1e-5)


def test_images_without_object_count_in_no_loss():
    model = _features_only_model()
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], np.float32)

    def loss_with_second_box(second_box):
        targets = {"class": np.array([0, NO_OBJECT], np.int32),
                   "box": np.array([[0, 0, 50, 50], second_box], np.float32)}
        predictions = {"class_probabilities": probs, "box": np.array([[0, 0, 50, 50], [0, 0, 5, 5]], np.float32)}
        return float(model.compute_loss(y=targets, y_pred=predictions))

    # Only the first image counts, averaged over the batch of 2: ln 2 / 2.
    np.testing.assert_allclose(loss_with_second_box([0, 0, 5, 5]), math.log(2.0) / 2, rtol=1e-5)
    np.testing.assert_allclose(loss_with_second_box([150, 60, 200, 100]), math.log(2.0) / 2, rtol=1e-5)


def test_metrics_by_hand():
    model = _features_only_model()
    targets = {"class": np.array([0, 1, 2, 0, NO_OBJECT], np.int32),
               "box": np.array([[0, 0, 50, 50], [0, 0, 100, 100], [20, 20, 60, 60],
                                [0, 0, 100, 100], [0, 0, 10, 10]], np.float32)}
    probs = np.array([[.8, .1, .1], [.1, .8, .1], [.8, .1, .1], [.6, .2, .2], [.1, .1, .8]], np.float32)
    boxes = np.array([[10, 0, 50, 50],     # class right, IoU .8  -> localized
                      [0, 0, 50, 50],      # class right, IoU .25 -> not localized
                      [20, 20, 60, 60],    # class wrong, IoU 1   -> not localized
                      [0, 0, 100, 50],     # class right, IoU .5  -> localized (>= .5)
                      [90, 90, 99, 99]],   # no object: ignored
                     np.float32)
    results = model.compute_metrics(None, targets, {"class_probabilities": probs, "box": boxes})
    np.testing.assert_allclose(float(results["accuracy"]), 3 / 4, rtol=1e-6)
    np.testing.assert_allclose(float(results["mean_iou"]), (0.8 + 0.25 + 1.0 + 0.5) / 4, rtol=1e-6)
    np.testing.assert_allclose(float(results["localization_accuracy"]), 2 / 4, rtol=1e-6)
    np.testing.assert_array_equal(class_hits(targets["class"][:4], probs[:4]), [1, 1, 0, 1])
    np.testing.assert_array_equal(
        localization_hits(targets["class"][:4], probs[:4], targets["box"][:4], boxes[:4]), [1, 0, 0, 1])


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_evaluate_gives_finite_loss_and_every_metric(tiny_model, box_loss):
    model = ClassificationLocalizationModel(tiny_model.backbone, tiny_model.head, box_loss=box_loss)
    model.compile(optimizer="adam", run_eagerly=True)  # graph mode: the slow test and test_transfer
    images, targets = make_square_images(8, SIZE)
    results = model.evaluate(images, targets, batch_size=8, verbose=0, return_dict=True)
    assert set(results) == {"loss", "class_loss", "box_loss", "accuracy", "mean_iou", "localization_accuracy"}
    assert all(np.isfinite(value) for value in results.values())


@pytest.mark.slow
def test_a_few_epochs_on_squares_lower_the_loss(tiny_model):
    tiny_model.compile(optimizer=keras.optimizers.Adam(2e-3))
    images, targets = make_square_images(64, SIZE, seed=1)
    history = tiny_model.fit(images, targets, batch_size=16, epochs=6, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["class_loss"][-1] < history["class_loss"][0]
    assert history["box_loss"][-1] < history["box_loss"][0]


def test_stage_one_on_features_then_stage_two_on_pixels_share_the_head(tiny_model):
    backbone, head = tiny_model.backbone, tiny_model.head
    freeze(backbone)
    images, targets = make_square_images(16, SIZE, seed=2)
    features = backbone(images)["P5"].numpy()
    stage_one = ClassificationLocalizationModel(None, head, image_size=(SIZE, SIZE))
    stage_one.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    stage_one.fit(features, targets, batch_size=8, epochs=1, verbose=0)
    stage_two = ClassificationLocalizationModel(backbone, head)
    on_features, on_pixels = stage_one(features), stage_two(images)
    for key in ("class_probabilities", "box"):
        np.testing.assert_allclose(on_pixels[key], on_features[key], rtol=1e-4, atol=1e-4)


def test_keras_file_round_trip_gives_equal_outputs_and_options(tiny_model, tmp_path):
    model = ClassificationLocalizationModel(tiny_model.backbone, tiny_model.head, box_loss="giou",
                                            box_loss_weight=2.5, iou_threshold=0.7)
    images, _ = make_square_images(3, SIZE, seed=4)
    path = tmp_path / "clsloc.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, ClassificationLocalizationModel)
    assert (reloaded.box_loss, reloaded.box_loss_weight, reloaded.iou_threshold) == ("giou", 2.5, 0.7)
    original, restored = model(images), reloaded(images)
    for key in ("class_probabilities", "box"):
        np.testing.assert_allclose(restored[key], original[key], rtol=1e-5, atol=1e-5)


def test_get_config_round_trip_without_backbone():
    model = _features_only_model(box_loss="giou", smooth_l1_delta=0.2)
    clone = ClassificationLocalizationModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert clone.backbone is None and clone.image_size == FRAME and clone.smooth_l1_delta == 0.2
    features = np.random.default_rng(0).normal(size=(2, 2, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(clone(features)["box"], model(features)["box"], rtol=1e-6)


def test_pretraining_classifier_trains_the_shared_backbone(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (SIZE, SIZE))
    classifier = build_classifier(backbone, 3)
    images, targets = make_square_images(16, SIZE, seed=5)
    probs = classifier(images)
    assert probs.shape == (16, 3)
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)
    kernel_before = backbone.get_layer("stem_conv").kernel.numpy().copy()
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    classifier.fit(images, targets["class"], batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(backbone.get_layer("stem_conv").kernel.numpy(), kernel_before)
    path = tmp_path / "pretrained_tiny.weights.h5"
    backbone.save_weights(path)
    reloaded = build_backbone("tiny", (SIZE, SIZE), weights=path)
    np.testing.assert_allclose(reloaded(images)["P5"], backbone(images)["P5"], rtol=1e-5, atol=1e-5)


def test_mismatches_are_explained(tiny_model):
    wrong_head = build_clsloc_head((4, 4, 128), 3)
    with pytest.raises(ClassificationLocalizationError, match=r"\(4, 4, 128\).*P5 \(2, 2, 128\)"):
        ClassificationLocalizationModel(tiny_model.backbone, wrong_head)
    with pytest.raises(ClassificationLocalizationError, match="image_size"):
        ClassificationLocalizationModel(None, tiny_model.head)
    with pytest.raises(ClassificationLocalizationError, match="differs"):
        ClassificationLocalizationModel(tiny_model.backbone, tiny_model.head, image_size=(32, 32))
    with pytest.raises(ClassificationLocalizationError, match="'l2'"):
        ClassificationLocalizationModel(tiny_model.backbone, tiny_model.head, box_loss="l2")
    with pytest.raises(ClassificationLocalizationError, match="box_pooling"):
        build_clsloc_head((2, 2, 8), 3, box_pooling="max")
    with pytest.raises(ClassificationLocalizationError, match="class_pooling"):
        build_clsloc_head((2, 2, 8), 3, class_pooling="flatten")


def test_average_pooling_head_has_the_same_contract():
    head = build_clsloc_head((2, 2, 8), 4, box_pooling="average")
    outputs = head(np.zeros((3, 2, 2, 8), np.float32))
    assert outputs["class_logits"].shape == (3, 4) and outputs["box_normalized"].shape == (3, 4)


def test_max_pooled_class_branch_answers_to_the_strongest_cell_only():
    features = np.zeros((1, 2, 2, 8), np.float32)
    features[0, 0, 1] = 5.0  # the object's cell
    busier = features.copy()
    busier[0, 1, 0] = 1.0  # weaker background responses elsewhere
    for pooling, unchanged in (("max", True), ("average", False)):
        head = build_clsloc_head((2, 2, 8), 4, class_pooling=pooling, dropout=0.0)
        same = np.allclose(head(features)["class_logits"], head(busier)["class_logits"], atol=1e-6)
        assert same == unchanged, pooling
