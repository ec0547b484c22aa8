"""SSD: targets, hard negative mining, losses, the detector's contract, save/load, a short fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.data.coco import load_coco
from detseg.models.backbones.registry import build_backbone
from detseg.models.ops.box_coding import encode_center_size
from detseg.models.ops.matching import IouMatcher
from detseg.models.ssd.detector import SsdDetector, build_ssd_detector
from detseg.models.ssd.head import SSD_BACKGROUND, SsdConfigError, SsdHeadConfig
from detseg.models.ssd.loss import hard_negatives, ssd_losses, ssd_targets
from detseg.pipelines.dataset import build_dataset

SIZE = 64
NUM_CLASSES = 3
CONFIG = SsdHeadConfig(extra_levels=1, extra_width=32, head_width=16, score_threshold=0.0, max_detections=20,
                       class_names=("circle", "rectangle", "triangle"))
VARIANCES = (0.1, 0.1, 0.2, 0.2)


def images(count: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> SsdDetector:
    keras.utils.set_random_seed(0)
    return build_ssd_detector(build_backbone("tiny", (SIZE, SIZE), alpha=0.5), NUM_CLASSES, CONFIG)


def test_targets_golden_values():
    anchors = tf.constant([[0, 0, 10, 10], [10, 0, 20, 10], [2, 0, 12, 10]], tf.float32)
    gt_boxes = np.array([[[1, 0, 11, 10], [-1, -1, -1, -1]]], np.float32)
    targets = ssd_targets(anchors, gt_boxes, np.array([[2, -1]], np.int32), IouMatcher(0.5, 0.4), VARIANCES)
    # IoUs with the box: 9/11, 1/19 (negative), 9/11 (equal best: both >= 0.5).
    np.testing.assert_array_equal(targets.positive, [[True, False, True]])
    np.testing.assert_array_equal(targets.negative, [[False, True, False]])
    np.testing.assert_array_equal(targets.classes, [[3, SSD_BACKGROUND, 3]])
    np.testing.assert_allclose(targets.deltas[0, 0], [1.0, 0.0, 0.0, 0.0], atol=1e-5)   # 1 px / 10 / 0.1
    np.testing.assert_allclose(targets.deltas[0, 2], [-1.0, 0.0, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(targets.deltas[0, 1], [0, 0, 0, 0])


def test_hard_negatives_pick_the_highest_losses():
    loss = tf.constant([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2]])
    negative = tf.constant([[True, True, True, False, True, True]])
    picked = hard_negatives(loss, negative, tf.constant([1.0]), negatives_per_positive=2, min_negatives=0)
    np.testing.assert_array_equal(picked, [[False, True, False, False, True, False]])
    at_least = hard_negatives(loss, negative, tf.constant([0.0]), negatives_per_positive=3, min_negatives=3)
    np.testing.assert_array_equal(at_least, [[False, True, True, False, True, False]])


def test_losses_count_positives_and_mined_negatives_only():
    anchors = tf.constant([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], tf.float32)
    targets = ssd_targets(anchors, np.array([[[0, 0, 10, 10]]], np.float32), np.array([[0]], np.int32),
                          IouMatcher(0.5, 0.4), VARIANCES)
    logits = tf.constant([[[0.0, 2.0], [1.0, 0.0], [3.0, 0.0]]])  # anchor 1 is the harder negative
    raw = {"class_logits": logits, "box_deltas": tf.constant([[[1.0, 0, 0, 0], [5, 5, 5, 5], [5, 5, 5, 5]]])}
    losses = ssd_losses(raw, targets, negatives_per_positive=1, min_negatives=0)
    ce = -tf.nn.log_softmax(logits).numpy()[0]
    np.testing.assert_allclose(float(losses["class"]), ce[0, 1] + ce[1, 0], rtol=1e-5)
    np.testing.assert_allclose(float(losses["box"]), 0.5, rtol=1e-5)  # smooth L1 of a 1.0 error
    assert float(losses["num_positive"]) == 1.0


def test_an_image_without_objects_has_zero_box_loss(model):
    x = images()
    y = {"boxes": np.full((2, 3, 4), -1, np.float32), "classes": np.full((2, 3), -1, np.int32)}
    model.box_loss_tracker.reset_state()
    loss = model.compute_loss(x, y, model(x))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert float(model.box_loss_tracker.result()) == 0.0


def test_outputs_follow_the_default_boxes(model):
    raw = model(images())
    count = len(model.anchors)
    per_cell = CONFIG.anchors(SIZE).anchors_per_location
    assert count == (8 * 8 + 4 * 4 + 2 * 2 + 1 * 1) * per_cell
    assert raw["box_deltas"].shape == (2, count, 4)
    assert raw["class_logits"].shape == (2, count, NUM_CLASSES + 1)


def test_decode_recovers_boxes_encoded_against_the_default_boxes(model):
    anchors = model.anchors
    target = np.array([[12, 10, 40, 30]], np.float32)
    deltas = encode_center_size(np.repeat(target, len(anchors), 0), anchors, CONFIG.variances)
    logits = np.full((1, len(anchors), NUM_CLASSES + 1), -10.0, np.float32)
    logits[0, :, SSD_BACKGROUND] = 10.0
    logits[0, 7, 2] = 10.0  # one default box says class 1 with probability 0.5
    out = model.decode({"box_deltas": deltas[tf.newaxis], "class_logits": logits})
    assert int(out["num_detections"][0]) >= 1
    np.testing.assert_allclose(out["boxes"][0, 0], target[0], atol=1e-3)
    assert int(out["classes"][0, 0]) == 1 and abs(float(out["scores"][0, 0]) - 0.5) < 1e-3


def test_detect_contract_and_class_names(model):
    out = model.predict(images(), batch_size=2, verbose=0)
    assert out["boxes"].shape == (2, 20, 4) and out["classes"].dtype == np.int32
    assert out["num_detections"].shape == (2,)
    assert model.class_names == ("circle", "rectangle", "triangle")


def test_stage1_form_and_square_inputs(model):
    head_only = SsdDetector(None, model.network, CONFIG, image_size=(SIZE, SIZE))
    x = images()
    np.testing.assert_allclose(head_only(model.backbone(x))["box_deltas"], model(x)["box_deltas"], atol=1e-5)
    with pytest.raises(SsdConfigError, match="square"):
        SsdDetector(None, model.network, CONFIG, image_size=(SIZE, 2 * SIZE))
    with pytest.raises(SsdConfigError, match="default boxes"):
        SsdDetector(None, model.network, CONFIG, image_size=(2 * SIZE, 2 * SIZE))


def test_save_load_round_trip(model, tmp_path):
    rebuilt = SsdDetector.from_config(model.get_config())
    assert rebuilt.config == model.config
    path = tmp_path / "ssd.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = images(seed=3)
    np.testing.assert_allclose(loaded(x)["class_logits"], model(x)["class_logits"], atol=1e-5)


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss(synthetic_dir):
    keras.utils.set_random_seed(2)
    detector = build_ssd_detector(build_backbone("tiny", (SIZE, SIZE), alpha=0.5), NUM_CLASSES, CONFIG)
    train = load_coco(synthetic_dir / "annotations" / "instances_train.json")
    batches = build_dataset(train, "detection", SIZE, 8, max_objects=8).take(3).cache()
    detector.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = detector.fit(batches, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
