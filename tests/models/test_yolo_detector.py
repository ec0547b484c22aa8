"""YoloDetector: shapes, decoding contract, stage-1 form, config and save/load, a short fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.data.coco import load_coco
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.yolo.detector import YoloDetector, build_yolo_detector
from detseg.models.yolo.head import YoloConfigError, YoloHeadConfig, build_yolo_network
from detseg.pipelines.dataset import build_dataset

SIZE = 64
NUM_CLASSES = 3
CONFIG = YoloHeadConfig(neck_widths=(16, 32, 64), neck_depth=1, reg_max=8, score_threshold=0.0,
                        max_detections=20, class_names=("circle", "rectangle", "triangle"))
GRID_POINTS = 8 * 8 + 4 * 4 + 2 * 2


def images(count: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


def padded_targets(boxes_per_image: list[list[list[float]]], classes_per_image, rows: int = 4) -> dict:
    boxes = np.full((len(boxes_per_image), rows, 4), -1.0, np.float32)
    classes = np.full((len(boxes_per_image), rows), -1, np.int32)
    for index, (image_boxes, image_classes) in enumerate(zip(boxes_per_image, classes_per_image)):
        boxes[index, :len(image_boxes)] = np.asarray(image_boxes, np.float32).reshape(-1, 4)
        classes[index, :len(image_classes)] = image_classes
    return {"boxes": boxes, "classes": classes}


@pytest.fixture(scope="module")
def model() -> YoloDetector:
    keras.utils.set_random_seed(0)
    return build_yolo_detector(build_backbone("tiny", (SIZE, SIZE), alpha=0.5), NUM_CLASSES, CONFIG)


def test_raw_outputs_have_one_row_per_grid_point(model):
    raw = model(images())
    assert raw["box_distribution"].shape == (2, GRID_POINTS, 4 * CONFIG.reg_max)
    assert raw["class_logits"].shape == (2, GRID_POINTS, NUM_CLASSES)


def test_detect_returns_the_padded_detection_contract(model):
    out = model.detect(images())
    assert out["boxes"].shape == (2, 20, 4) and out["boxes"].dtype == tf.float32
    assert out["scores"].shape == (2, 20) and out["classes"].dtype == tf.int32
    assert out["num_detections"].shape == (2,) and out["num_detections"].dtype == tf.int32
    boxes = out["boxes"].numpy()
    assert boxes.min() >= 0 and boxes.max() <= SIZE  # clipped to the input frame
    for row, count in enumerate(out["num_detections"].numpy()):
        assert np.all(out["classes"][row, :count] >= 0) and np.all(out["classes"][row, count:] == -1)
    predicted = model.predict(images(), batch_size=2, verbose=0)
    np.testing.assert_array_equal(predicted["num_detections"], out["num_detections"])


def test_class_names_come_from_the_config(model):
    assert model.class_names == ("circle", "rectangle", "triangle")
    unnamed = YoloDetector(model.backbone, model.network, YoloHeadConfig(reg_max=CONFIG.reg_max))
    assert unnamed.class_names == ("class_0", "class_1", "class_2")


def test_stage1_form_takes_features_and_shares_the_network(model):
    features = model.backbone(images())
    head_only = YoloDetector(None, model.network, CONFIG, image_size=(SIZE, SIZE))
    np.testing.assert_allclose(head_only(features)["class_logits"], model(images())["class_logits"], atol=1e-5)
    with pytest.raises(YoloConfigError, match="image_size"):
        YoloDetector(None, model.network, CONFIG)


def test_a_network_for_another_size_is_refused(model):
    with pytest.raises(YoloConfigError, match="grid points"):
        YoloDetector(None, model.network, CONFIG, image_size=(SIZE * 2, SIZE * 2))


def test_empty_images_give_a_finite_loss_and_zero_box_loss(model):
    x = images()
    y = padded_targets([[], []], [[], []])
    model.box_loss_tracker.reset_state()
    model.dfl_loss_tracker.reset_state()
    loss = model.compute_loss(x, y, model(x, training=False))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert float(model.box_loss_tracker.result()) == 0.0
    assert float(model.dfl_loss_tracker.result()) == 0.0


def test_config_round_trip_and_save_load(model, tmp_path):
    x = images(seed=1)
    rebuilt = YoloDetector.from_config(model.get_config())
    assert rebuilt.config == model.config and rebuilt.image_size == model.image_size
    path = tmp_path / "yolo.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, YoloDetector) and loaded.class_names == model.class_names
    np.testing.assert_allclose(loaded(x)["box_distribution"], model(x)["box_distribution"], atol=1e-5)


def test_detect_exports_as_a_graph_function(model):
    detect = tf.function(model.detect, input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    out = detect(images(3))
    assert out["boxes"].shape == (3, 20, 4)


def test_network_refuses_missing_levels():
    with pytest.raises(YoloConfigError, match="P5"):
        build_yolo_network({"P3": (8, 8, 8), "P4": (4, 4, 8)}, 2, CONFIG)


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss(synthetic_dir):
    keras.utils.set_random_seed(1)
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    detector = build_yolo_detector(backbone, NUM_CLASSES, CONFIG)
    train = load_coco(synthetic_dir / "annotations" / "instances_train.json")
    batches = build_dataset(train, "detection", SIZE, 8, max_objects=8).take(3).cache()
    detector.compile(optimizer=keras.optimizers.Adam(3e-3))
    # Training-mode losses: a few steps cannot move BatchNorm's moving statistics far
    # enough for an inference-mode comparison to mean anything.
    losses = detector.fit(batches, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    assert feature_shape(backbone, "P3") == (8, 8, 16)


@pytest.mark.slow
def test_exported_saved_model_gives_the_same_detections(model, tmp_path):
    from detseg.serving.serving_module import ServingModule

    module = ServingModule(model.detect, task="detection", letterbox=SIZE, label_names=model.class_names,
                           trackables=[model])
    pixels = np.random.default_rng(5).integers(0, 255, (2, 48, 80, 3), dtype=np.uint8)
    before = module.serving_pixels(tf.constant(pixels))
    tf.saved_model.save(module, str(tmp_path / "yolo"), signatures=module.signatures())
    after = tf.saved_model.load(str(tmp_path / "yolo")).signatures["serving_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_array_equal(after["num_detections"], before["num_detections"])
    np.testing.assert_allclose(after["boxes"], before["boxes"], atol=1e-3)
    assert after["boxes"].numpy()[..., 0::2].max() <= 80  # original pixels, not the 64-px frame
    assert set(after["class_names"].numpy()[0, :int(after["num_detections"][0])]) <= {
        name.encode() for name in model.class_names}
