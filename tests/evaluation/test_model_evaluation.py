"""Evaluating models three ways (in memory, SavedModel, served over REST) for every task kind.

The models are small graph computations whose right answer is known: images hold one
bright rectangle on a dark ground, and the "detector" returns the bounding box of the
bright pixels of its letterboxed input (the "segmenter" their probabilities). So the
predictions mapped back to the original images must be the rectangles (up to the
blur of resizing), COCO AP50 must be 1, and the three ways of running the model must
agree. Images are non-square (letterbox padding on either axis) and of several sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from detseg.data.coco import load_coco
from detseg.cli import main
from detseg.evaluation.coco_eval import load_ground_truth
from detseg.evaluation.task_evaluation import evaluate_task_predictions
from detseg.serving.export import export_saved_model
from detseg.serving.image_predictions import SavedModelImages, ServedModelImages, image_predictions
from detseg.serving.model_config import ModelEntry
from detseg.serving.server import ModelServer, ServerOptions
from detseg.serving.serving_module import ServingModule
from detseg.training.predictions import eval_targets, model_predictions

pytestmark = pytest.mark.slow  # exports three models and starts a server (~20 s on 2 idle cores)

FRAME = 64
BRIGHT, DARK = 230, 30
CATEGORIES = [{"id": 5, "name": "box"}, {"id": 9, "name": "bar"}]  # non-contiguous ids
FOUND_CLASS = 1  # "bar": every object of the dataset
# (height, width, rectangle x, y, w, h); the last image has no object.
IMAGES = [(48, 80, 10, 8, 40, 30), (96, 64, 12, 20, 36, 50), (64, 64, 4, 30, 50, 24),
          (40, 100, 55, 6, 38, 26), (72, 56, 0, 0, 30, 40), (50, 70, None, None, None, None)]
SERVER_LIFETIME_S = 300


def bright_mask(pixels):
    """`[B, S, S, 3]` -> `float32 [B, S, S]` soft "brightness" in 0..1 (0.5 half way)."""
    return tf.sigmoid((tf.reduce_mean(pixels, axis=-1) - (BRIGHT + DARK) / 2) / 8.0)


class BrightBoxDetector(keras.Model):
    """One detection per image: the bounding box of its bright pixels (none if there are none)."""

    def __init__(self, with_masks: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.with_masks = with_masks

    def call(self, pixels, training=False):
        soft = bright_mask(pixels)
        bright = soft >= 0.5
        rows, cols = tf.reduce_any(bright, axis=2), tf.reduce_any(bright, axis=1)
        found = tf.reduce_any(rows, axis=1)
        size = tf.cast(tf.shape(pixels)[1], tf.float32)

        def first(flags):
            return tf.cast(tf.argmax(tf.cast(flags, tf.int32), axis=1), tf.float32)

        boxes = tf.stack([first(cols), first(rows), size - first(cols[:, ::-1]), size - first(rows[:, ::-1])], -1)
        outputs = {"boxes": boxes[:, None, :], "scores": tf.where(found, 0.9, 0.0)[:, None],
                   "classes": tf.where(found, FOUND_CLASS, -1)[:, None],
                   "num_detections": tf.cast(found, tf.int32)}
        if self.with_masks:
            outputs["masks"] = soft[:, None]
        return outputs


class BrightSegmenter(keras.Model):
    """Probabilities of background / "box" / "bar" per pixel: bright pixels are "bar"."""

    def call(self, pixels, training=False):
        soft = bright_mask(pixels)
        return {"probabilities": tf.stack([1.0 - soft, tf.zeros_like(soft), soft], axis=-1)}


def write_dataset(root: Path) -> Path:
    """Images and a COCO file (polygons) of `IMAGES` under `root`; returns the JSON path."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for index, (height, width, x, y, w, h) in enumerate(IMAGES, start=1):
        pixels = np.full((height, width, 3), DARK, np.uint8)
        if x is not None:
            pixels[y:y + h, x:x + w] = BRIGHT
            annotations.append({"id": index, "image_id": index, "category_id": 9, "bbox": [x, y, w, h],
                                "area": float(w * h), "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        Image.fromarray(pixels).save(root / "images" / f"{index}.png")
        images.append({"id": index, "file_name": f"{index}.png", "height": height, "width": width})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


MODELS = {  # served name -> (pipeline task, serving task: the same core task name, model, label names)
    "boxes": ("detection", "detection", BrightBoxDetector(), ["box", "bar"]),
    "masks": ("instance", "instance", BrightBoxDetector(with_masks=True), ["box", "bar"]),
    "regions": ("semantic", "semantic", BrightSegmenter(), ["background", "box", "bar"]),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset, each model exported to `exports/<name>/1`, and one server over them."""
    root = tmp_path_factory.mktemp("model_evaluation")
    annotations = write_dataset(root / "data")
    entries = []
    for name, (_, serving_task, model, labels) in MODELS.items():
        module = ServingModule(model, task=serving_task, letterbox=FRAME, label_names=labels)
        export_saved_model(module, root / "exports" / name)
        entries.append(ModelEntry(name, root / "exports" / name))
    server = ModelServer(entries, ServerOptions(port=None, rest_api_port=0, poll_interval_s=0,
                                                max_lifetime_s=SERVER_LIFETIME_S)).start()
    yield {"annotations": annotations, "exports": root / "exports", "server": server, "root": root,
           "predicted": {}}
    server.stop()


def three_ways(setup, name: str) -> dict[str, dict[int, dict]]:
    """`{way: {image_id: prediction}}` for the model `name`, run in memory, as SavedModel, served
    (computed once per model for the module)."""
    if name not in setup["predicted"]:
        setup["predicted"][name] = _predict_three_ways(setup, name)
    return setup["predicted"][name]


def _predict_three_ways(setup, name: str) -> dict[str, dict[int, dict]]:
    task, _, model, _ = MODELS[name]
    dataset = load_coco(setup["annotations"])
    files = [(image.id, dataset.image_path(image)) for image in dataset.images]
    served = ServedModelImages(setup["server"].rest_url, name)
    try:
        return {"memory": dict(model_predictions(model, dataset, task, FRAME, batch_size=4)),
                "saved_model": dict(image_predictions(SavedModelImages(setup["exports"] / name), files, 4)),
                "served": dict(image_predictions(served, files, 4))}
    finally:
        served.close()


def evaluate(setup, name: str, predictions: dict[int, dict]) -> dict:
    task = MODELS[name][0]
    dataset = load_coco(setup["annotations"])
    _, report = evaluate_task_predictions(load_ground_truth(dataset), task, predictions.items(),
                                          eval_targets(dataset, task), progress=False)
    return report


def true_box(image_id: int) -> np.ndarray:
    _, _, x, y, w, h = IMAGES[image_id - 1]
    return np.array([x, y, x + w, y + h], np.float32)


@pytest.mark.parametrize("name", ["boxes", "masks"])
def test_detections_map_back_to_the_original_rectangles_in_every_way(setup, name):
    ways = three_ways(setup, name)
    for way, predictions in ways.items():
        assert sorted(predictions) == [1, 2, 3, 4, 5, 6], way
        for image_id, prediction in predictions.items():
            height, width = IMAGES[image_id - 1][:2]
            found = [c for c in np.asarray(prediction["classes"]).tolist() if c != -1]
            if IMAGES[image_id - 1][2] is None:
                assert found == [], (way, image_id)
                continue
            assert found == [FOUND_CLASS], (way, image_id)
            # One frame pixel of blur is max(h, w) / FRAME original pixels.
            tolerance = max(height, width) / FRAME + 0.5
            np.testing.assert_allclose(prediction["boxes"][0], true_box(image_id), atol=tolerance,
                                       err_msg=f"{way} image {image_id}")
            if name == "masks":
                mask = np.asarray(prediction["masks"][0])
                assert mask.shape == (height, width), way
                x0, y0, x1, y1 = true_box(image_id).astype(int)
                truth = np.zeros((height, width), bool)
                truth[y0:y1, x0:x1] = True
                assert (mask.astype(bool) & truth).sum() / (mask.astype(bool) | truth).sum() > 0.85, (way, image_id)


@pytest.mark.parametrize("name, iou_types", [("boxes", ["bbox"]), ("masks", ["bbox", "segm"])])
def test_coco_numbers_are_perfect_at_iou_half_and_agree_between_the_ways(setup, name, iou_types):
    reports = {way: evaluate(setup, name, predictions) for way, predictions in three_ways(setup, name).items()}
    for way, report in reports.items():
        assert sorted(report["coco"]) == sorted(iou_types), way
        for iou_type in iou_types:
            stats = report["coco"][iou_type]["stats"]
            assert stats["AP50"] == pytest.approx(1.0), (way, iou_type)
            assert stats["AP"] > 0.5, (way, iou_type)
            assert report["coco"][iou_type]["num_detections"] == 5
            # The same rectangles, up to the resizing's rounding, in memory and exported.
            assert stats["AP"] == pytest.approx(reports["memory"]["coco"][iou_type]["stats"]["AP"], abs=0.06)


def test_semantic_class_maps_are_the_rectangles_and_agree_between_the_ways(setup):
    ways = three_ways(setup, "regions")
    for way, predictions in ways.items():
        for image_id, prediction in predictions.items():
            height, width, x, y, w, h = IMAGES[image_id - 1]
            class_map = np.asarray(prediction["class_map"])
            assert class_map.shape == (height, width), way
            truth = np.zeros((height, width), np.int64)
            if x is not None:
                truth[y:y + h, x:x + w] = FOUND_CLASS + 1
            assert np.mean(class_map == truth) > 0.97, (way, image_id)
        report = evaluate(setup, "regions", predictions)
        semantic = report["semantic"]
        assert semantic["class_names"] == ["background", "box", "bar"]
        assert semantic["mean_iou"] > 0.9, way
        assert semantic["per_class"][1]["iou"] is None  # "box": neither in truth nor predicted
        assert semantic["num_pixels"] == sum(h * w for h, w, *_ in IMAGES)


def test_cli_evaluates_a_saved_model_base_path_and_a_served_model(setup, tmp_path, capsys):
    common = ["--annotations", str(setup["annotations"]), "--examples", "1"]
    assert main(["evaluate", str(setup["exports"] / "masks"), "--out", str(tmp_path / "sm"), *common]) == 0
    assert main(["evaluate", "--server", setup["server"].rest_url, "--model-name", "masks",
                 "--out", str(tmp_path / "served"), *common]) == 0
    printed = capsys.readouterr().out
    assert "COCO bbox" in printed and "COCO segm" in printed
    for out in ("sm", "served"):
        results = json.loads((tmp_path / out / "coco_results.json").read_text())
        assert {r["category_id"] for r in results} == {9} and len(results) == 5
        assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
        report = json.loads((tmp_path / out / "report.json").read_text())
        assert report["coco"]["segm"]["stats"]["AP50"] == pytest.approx(1.0)
        assert (tmp_path / out / "examples" / "image_1.png").is_file()
    saved = json.loads((tmp_path / "sm" / "report.json").read_text())
    assert saved["source"]["model"].endswith(str(Path("masks") / "1"))


def test_cli_writes_the_semantic_report_of_a_served_segmenter(setup, tmp_path, capsys):
    """Truth from the annotations although masks/ beside images/ holds instance masks (as
    `data convert --from masks --mask-kind instance` writes them); from --semantic-masks
    when it names a folder."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    annotations = data / "annotations.json"
    annotations.write_text(setup["annotations"].read_text())
    for index, (height, width, x, y, w, h) in enumerate(IMAGES, start=1):
        (data / "images" / f"{index}.png").symlink_to(setup["annotations"].parent / "images" / f"{index}.png")
        for folder, value in ((data / "masks", 9001), (tmp_path / "semantic", 0)):
            labels = np.zeros((height, width), np.uint16 if value > 255 else np.uint8)
            if x is not None:
                labels[y:y + h, x:x + w] = value  # semantic: every pixel background
            folder.mkdir(exist_ok=True)
            Image.fromarray(labels).save(folder / f"{index}.png")
    common = ["--server", setup["server"].rest_url, "--model-name", "regions", "--annotations", str(annotations),
              "--examples", "0"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["kind"] == "semantic_segmentation" and report["semantic"]["mean_iou"] > 0.9
    assert "mean_iou" in capsys.readouterr().out
    results = json.loads((tmp_path / "r" / "coco_results.json").read_text())
    assert {(r["image_id"], r["category_id"]) for r in results} == {(i, 9) for i in range(1, 6)}
    assert main(["evaluate", *common, "--out", str(tmp_path / "s"), "--semantic-masks", str(tmp_path / "semantic")]) == 0
    against_background = json.loads((tmp_path / "s" / "report.json").read_text())["semantic"]
    assert against_background["mean_iou"] < 0.5  # the bright "bar" pixels are now all false positives


@pytest.mark.parametrize("make_args, expected", [
    (lambda s, t: [str(t)], "neither a run directory"),
    (lambda s, t: [str(t / "missing")], "missing: no such file or folder"),
    (lambda s, t: ["--server", "http://127.0.0.1:9", "--model-name", "boxes"], "server unreachable"),
    (lambda s, t: ["--server", s["server"].rest_url, "--model-name", "nope"], "the server answered 404"),
    (lambda s, t: [str(s["exports"] / "boxes"), "--predictions", "r.json"], "give exactly one of MODEL"),
])
def test_cli_errors_are_one_line_naming_the_fault(setup, tmp_path, capsys, make_args, expected):
    code = main(["evaluate", *make_args(setup, tmp_path), "--annotations", str(setup["annotations"]),
                 "--out", str(tmp_path / "out")])
    first_line = capsys.readouterr().err.splitlines()[0]
    assert code == 2 and first_line.startswith("detseg: error: ") and expected in first_line


@pytest.mark.parametrize("name", ["boxes", "regions"])
def test_a_model_trained_on_other_classes_is_refused(setup, tmp_path, name):
    """The exported names ("box", "bar") against annotations that call the classes otherwise."""
    payload = json.loads(setup["annotations"].read_text())
    payload["categories"] = [{"id": 5, "name": "box"}, {"id": 9, "name": "dog"}]
    other = setup["annotations"].with_name(f"other_names_{name}.json")
    other.write_text(json.dumps(payload))
    task = MODELS[name][0]
    dataset = load_coco(other)
    predictions = three_ways(setup, name)["saved_model"].items()
    with pytest.raises(ValueError, match=r"model's class 1 is 'bar' but in the annotations it is 'dog'"):
        evaluate_task_predictions(dataset, task, predictions, eval_targets(dataset, task), progress=False)
