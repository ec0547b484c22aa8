"""Every task model has one shape (`models.TaskModel`): config round trip, XLA off by default,
decoded predictions from `predict_step`, raw outputs from `call`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import detseg.models as models
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.ssd.head import SsdHeadConfig
from detseg.models.yolo.head import YoloHeadConfig
from test_faster_rcnn import SMALL_OPTIONS

SIZE = 64
NUM_CLASSES = 3
LEVELS = ("P3", "P4")


def _backbone():
    return build_backbone("tiny", (SIZE, SIZE), alpha=0.5)


def _segmenter_head(backbone):
    from detseg.models.segmentation.fcn import build_fcn_head

    features = {level: keras.Input(tuple(t.shape[1:]), name=level) for level, t in backbone.output.items()}
    return build_fcn_head(features, NUM_CLASSES + 1, "fcn16s", 8, 0.0, False)


BUILDERS = {
    "ClassificationLocalizationModel": lambda b: models.ClassificationLocalizationModel(
        b, models.build_clsloc_head(feature_shape(b), NUM_CLASSES, hidden_units=8)),
    "YoloDetector": lambda b: models.build_yolo_detector(
        b, NUM_CLASSES, YoloHeadConfig(neck_widths=(16, 32, 64), neck_depth=1, reg_max=8)),
    "SsdDetector": lambda b: models.build_ssd_detector(
        b, NUM_CLASSES, SsdHeadConfig(extra_levels=1, extra_width=32, head_width=16)),
    "FasterRCNN": lambda b: models.build_faster_rcnn(b, NUM_CLASSES, levels=LEVELS, fpn_channels=16,
                                                     box_head_units=32, options=SMALL_OPTIONS),
    "MaskRCNN": lambda b: models.build_mask_rcnn(b, NUM_CLASSES, levels=LEVELS, fpn_channels=16,
                                                 box_head_units=32, mask_channels=8, options=SMALL_OPTIONS),
    "SemanticSegmenter": lambda b: models.SemanticSegmenter(encoder=b, head=_segmenter_head(b),
                                                            num_classes=NUM_CLASSES + 1),
    "FCN": lambda b: models.FCN(b, NUM_CLASSES + 1, variant="fcn8s", head_filters=8),
    "UNet": lambda b: models.UNet(NUM_CLASSES + 1, backbone=b, decoder_filters=(16, 8, 8)),
}
# What `predict_step` returns per family: the names `serving.task_outputs` serves.
PREDICTION_KEYS = {
    "ClassificationLocalizationModel": {"class_probabilities", "box"},
    "YoloDetector": {"boxes", "scores", "classes", "num_detections"},
    "SsdDetector": {"boxes", "scores", "classes", "num_detections"},
    "FasterRCNN": {"boxes", "scores", "classes", "num_detections"},
    "MaskRCNN": {"boxes", "scores", "classes", "num_detections", "masks"},
    "SemanticSegmenter": {"logits", "probabilities", "class_map"},
    "FCN": {"logits", "probabilities", "class_map"},
    "UNet": {"logits", "probabilities", "class_map"},
}


def test_every_task_model_is_covered_and_exported():
    assert {cls.__name__ for cls in models.TASK_MODELS} == set(BUILDERS) == set(PREDICTION_KEYS)
    for cls in models.TASK_MODELS:
        assert issubclass(cls, models.TaskModel), cls
        assert getattr(models, cls.__name__) is cls


def _plain(config: dict) -> dict:
    """A config with nested models reduced to their class names (auto layer names differ)."""
    return {key: value["class_name"] if isinstance(value, dict) and "class_name" in value else value
            for key, value in config.items()}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request):
    keras.utils.set_random_seed(0)
    return request.param, BUILDERS[request.param](_backbone())


def test_get_config_round_trips(built):
    name, model = built
    config = model.get_config()
    rebuilt = type(model).from_config(config)
    assert type(rebuilt) is type(model)
    assert _plain(rebuilt.get_config()) == _plain(config)
    for key in type(model).nested_model_keys:
        if getattr(model, key) is not None:
            assert isinstance(getattr(rebuilt, key), keras.layers.Layer), (name, key)


def test_compile_defaults_jit_compile_to_false_unless_asked(built):
    _, model = built
    model.compile(optimizer="sgd")
    assert model.jit_compile is False
    model.compile(optimizer="sgd", jit_compile=True)
    assert model.jit_compile is True
    model.compile(optimizer="sgd")  # leave it as the other tests expect


def test_predict_step_gives_the_served_prediction_names(built):
    name, model = built
    pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32))
    assert set(model.predict_step(pixels)) == PREDICTION_KEYS[name]
    assert set(model.predict_step((pixels,))) == PREDICTION_KEYS[name]


def test_compile_creates_the_optimizer_slots_of_every_trainable_variable(built):
    # Left to the first trace of the train step, Keras would create them there, and a
    # tf.function that creates variables is traced twice (see the next test).
    name, model = built
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert model.optimizer.built, name
    slots = {id(variable) for variable in model.optimizer.variables}
    assert len(slots) == 1 + 1 + 2 * len(model.trainable_variables), name  # iterations, lr, m and v
    model.compile(optimizer="sgd")  # leave it as the other tests expect


def test_fit_traces_the_train_step_once():
    keras.utils.set_random_seed(0)
    model = BUILDERS["ClassificationLocalizationModel"](_backbone())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    traces = []
    train_step = model.train_step

    def counted_train_step(data):  # runs once per trace, not per step
        traces.append(tf.nest.map_structure(lambda t: t.shape, data))
        return train_step(data)

    model.train_step = counted_train_step
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
    y = {"class": rng.integers(0, NUM_CLASSES, 8).astype(np.int32),
         "box": rng.uniform(0, 1, (8, 4)).astype(np.float32)}
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2, verbose=0)
    assert len(traces) == 1, traces
