"""`detseg.workflows`: the library side of the commands (fast checks; the whole chain runs in
tests/test_python_api.py and the command tests)."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.training.config import ConfigError, load_config
from detseg.workflows.evaluate import EvaluateArgumentsError, evaluate_model
from detseg.workflows.predict import (draw_prediction, open_predictor, output_stems, predict_images,
                                     task_record)
from detseg.workflows.serve import model_entries, start_server
from detseg.workflows.train import resolve_train_config


def test_a_train_config_is_a_path_a_packaged_name_or_an_object_with_overrides(tmp_path):
    by_name = resolve_train_config("smoke/yolo", [f"runs_dir={tmp_path}", "stage1.epochs=3"], "mirrored")
    assert by_name.stage1.epochs == 3 and by_name.strategy == "mirrored"
    again = resolve_train_config(load_config("smoke/yolo", [f"runs_dir={tmp_path}"]), ["stage1.epochs=3"])
    assert again == resolve_train_config("smoke/yolo", [f"runs_dir={tmp_path}", "stage1.epochs=3"])
    with pytest.raises(ConfigError, match="'stage1.epocs'"):
        resolve_train_config(again, ["stage1.epocs=1"])
    with pytest.raises(TypeError, match="TrainConfig"):
        resolve_train_config(3)


def test_detection_records_keep_the_detections_above_min_score():
    prediction = {"boxes": np.array([[1, 2, 5, 6], [0, 0, 3, 3]], np.float32),
                  "scores": np.array([0.9, 0.2], np.float32), "classes": np.array([1, 0]),
                  "class_names": ["b", "a"], "num_detections": 2,
                  "masks": np.zeros((2, 8, 8), np.uint8)}
    record = task_record(prediction, min_score=0.5)
    assert record["task"] == "detection" and len(record["detections"]) == 1
    kept = record["detections"][0]
    assert (kept["box"], kept["class"], kept["class_name"], kept["score"]) == ([1, 2, 5, 6], 1, "b", 0.9)
    assert kept["mask"]["size"] == [8, 8]
    drawn = draw_prediction(np.zeros((8, 8, 3), np.uint8), prediction, min_score=0.5)
    assert drawn.shape == (8, 8, 3) and drawn.any()


def test_segmentation_and_clsloc_records():
    semantic = {"class_map": np.array([[0, 1], [1, 1]], np.int32), "label_names": ["background", "cat"]}
    assert task_record(semantic) == {"task": "segmentation", "label_names": ["background", "cat"],
                                     "pixels_per_class": {"background": 1, "cat": 3}}
    clsloc = {"class": 2, "class_name": "dog", "score": 0.75, "box": np.array([1, 2, 3, 4], np.float32)}
    assert task_record(clsloc) == {"task": "classification_localization", "class": 2, "class_name": "dog",
                                   "score": 0.75, "box": [1.0, 2.0, 3.0, 4.0]}


def test_output_stems_number_only_shared_names(tmp_path):
    assert output_stems([tmp_path / "a.png", tmp_path / "x" / "a.jpg", tmp_path / "b.png"]) == [
        "0000_a", "0001_a", "b"]


def test_an_unreadable_image_is_named_before_any_model_is_opened(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        predict_images([broken], server="http://127.0.0.1:9", model_name="x")
    with pytest.raises(ValueError, match="one of them"):
        open_predictor()


def test_server_and_evaluation_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="one of them"):
        model_entries()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        start_server(tmp_path / "nowhere", "m")
    with pytest.raises(ValueError, match="rest_api_port must be >= 0"):
        start_server(tmp_path, "m", rest_api_port=-1)
    assert model_entries(tmp_path)[0].name == tmp_path.name
    with pytest.raises(EvaluateArgumentsError, match="exactly one model source"):
        evaluate_model(None, tmp_path / "gt.json", tmp_path / "out")
