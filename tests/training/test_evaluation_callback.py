"""`EvaluationCallback`: the real metric every N epochs in the logs, hence in the CSV and TensorBoard logs.

The fitted model is the cls+loc task model on the session's synthetic dataset (square
128 px images at a 64 px input, so the letterbox is a pure scale and IoUs are the same
in the frame and in the original image): the callback's numbers must equal the cls+loc
family's own frame-based evaluation (`training.clsloc_family.evaluate`), a separate code
path.
"""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import CLASSIFICATION_LOCALIZATION, INSTANCE, SEMANTIC
from detseg.data.coco import load_coco
from detseg.evaluation.task_evaluation import evaluate_task_predictions
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.clsloc.classification_localization import ClassificationLocalizationModel, build_clsloc_head
from detseg.pipelines.dataset import build_dataset, build_eval_dataset
from detseg.training.callbacks import MetricsCsv, ScalarEventLog
from detseg.training.clsloc_family import evaluate as clsloc_family_evaluate
from detseg.training.evaluation_callback import EvaluationCallback, logged_metrics
from detseg.training.predictions import eval_targets

SIZE = 64


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def splits(synthetic_dir):
    annotations = synthetic_dir / "annotations"
    return load_coco(annotations / "instances_train.json"), load_coco(annotations / "instances_val.json")


def clsloc_model(num_classes: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (SIZE, SIZE))
    head = build_clsloc_head(feature_shape(backbone, "P5"), num_classes, hidden_units=16, box_channels=4,
                             dropout=0.0)
    model = ClassificationLocalizationModel(backbone, head)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.slow
def test_two_epoch_fit_writes_the_metrics_into_both_csv_logs(splits, tmp_path):
    train, val = splits
    model = clsloc_model(train.label_map.num_classes)
    seen = []
    callback = EvaluationCallback(val, CLASSIFICATION_LOCALIZATION, SIZE, every=1, batch_size=4, log=seen.append)
    keras_csv, our_csv = tmp_path / "keras.csv", tmp_path / "metrics.csv"
    model.fit(build_dataset(train, CLASSIFICATION_LOCALIZATION, SIZE, 8), epochs=2, verbose=0,
              validation_data=build_dataset(val, CLASSIFICATION_LOCALIZATION, SIZE, 8),
              callbacks=[callback, keras.callbacks.CSVLogger(str(keras_csv)), MetricsCsv(our_csv, stage=2),
                         ScalarEventLog(tmp_path / "tensorboard")])
    frame_metrics = clsloc_family_evaluate(
        model, build_eval_dataset(val, CLASSIFICATION_LOCALIZATION, SIZE, 4, with_targets=True), val.label_map)
    for path in (keras_csv, our_csv):
        rows = read_csv(path)
        assert [int(r["epoch"]) + (path == keras_csv) for r in rows] == [1, 2]  # CSVLogger counts from 0
        for key in ("val_loc_accuracy", "val_cls_accuracy", "val_box_mIoU", "val_loss"):
            assert all(r[key] not in ("", "NA") for r in rows), (path.name, key)
        last = rows[-1]
        assert float(last["val_cls_accuracy"]) == pytest.approx(frame_metrics["accuracy"])
        assert float(last["val_loc_accuracy"]) == pytest.approx(frame_metrics["localization_accuracy"])
        assert float(last["val_box_mIoU"]) == pytest.approx(frame_metrics["mean_iou"], abs=1e-5)
    assert len(seen) == 2 and seen[-1].startswith("epoch 2: val_loc_accuracy")
    assert tensorboard_steps(tmp_path / "tensorboard", "val_loc_accuracy") == [1, 2]


def tensorboard_steps(log_dir, tag: str) -> list[int]:
    """Steps at which the event files under `log_dir` hold a scalar `tag`."""
    steps = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def test_evaluates_every_nth_epoch_and_the_last(splits):
    """epochs=5, every=2: after epochs 2, 4 and 5; other epochs' logs stay as they were."""
    train, val = splits
    model = clsloc_model(train.label_map.num_classes)
    callback = EvaluationCallback(val, CLASSIFICATION_LOCALIZATION, SIZE, every=2, batch_size=4)
    callback.set_model(model)
    callback.set_params({"epochs": 5, "verbose": 0})
    evaluated = []
    for epoch in range(5):
        logs = {"loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        if "val_loc_accuracy" in logs:
            evaluated.append(epoch + 1)
        assert logs["loss"] == 1.0
    assert evaluated == [2, 4, 5]
    assert callback.last_report["classification_localization"]["num_samples"] == len(eval_targets(
        val, CLASSIFICATION_LOCALIZATION))


def test_stage_one_can_evaluate_the_pixel_model_sharing_the_trained_head(splits):
    """The model being fitted takes features; the callback is given the pixel-input model."""
    train, val = splits
    pixel_model = clsloc_model(train.label_map.num_classes)
    feature_model = ClassificationLocalizationModel(None, pixel_model.head, image_size=(SIZE, SIZE))
    callback = EvaluationCallback(val, CLASSIFICATION_LOCALIZATION, SIZE, model=pixel_model, batch_size=4)
    callback.set_model(feature_model)
    callback.set_params({"epochs": 1})
    logs = {}
    callback.on_epoch_end(0, logs)
    assert 0.0 <= logs["val_cls_accuracy"] <= 1.0 and math.isfinite(logs["val_box_mIoU"])


def perfect_predictions(dataset, task):
    """The ground truth itself, as a predictor would yield it."""
    truths = eval_targets(dataset, task)
    for image in dataset.images:
        if task == SEMANTIC:
            yield image.id, {"class_map": truths[image.id].astype(np.int64) % 255}  # ignore -> background
            continue
        objects = [a for a in image.annotations if not a.iscrowd]
        yield image.id, {"boxes": np.array([a.box_xyxy for a in objects], np.float32).reshape(-1, 4),
                         "scores": np.ones(len(objects)),
                         "classes": np.array([dataset.label_map.index_of(a.category_id) for a in objects]),
                         "masks": np.array([a.mask(image.height, image.width) for a in objects]).reshape(
                             -1, image.height, image.width)}


@pytest.mark.parametrize("task, expected", [
    (INSTANCE, {"val_coco_AP": 1.0, "val_coco_AP50": 1.0, "val_coco_segm_AP": 1.0, "val_coco_segm_AP50": 1.0}),
    (SEMANTIC, {"val_mIoU": 1.0, "val_pixel_accuracy": 1.0}),
])
def test_logged_names_of_the_detection_and_semantic_reports(splits, task, expected):
    _, val = splits
    _, report = evaluate_task_predictions(val, task, perfect_predictions(val, task), eval_targets(val, task),
                                          progress=False)
    assert logged_metrics(task, report) == pytest.approx(expected)


def test_unmeasurable_values_are_logged_as_nan():
    """pycocotools' "no ground truth" (None in our reports) must stay a float for the CSV."""
    report = {"coco": {"bbox": {"stats": {"AP": None, "AP50": 0.5}}}}
    values = logged_metrics("detection", report, prefix="eval_")
    assert math.isnan(values["eval_coco_AP"]) and values["eval_coco_AP50"] == 0.5
