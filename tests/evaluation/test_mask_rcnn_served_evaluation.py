"""Mask R-CNN end to end: trained by the trainer, exported, served over REST, evaluated three ways.

A tiny Mask R-CNN is trained with the smoke config (`configs/smoke/mask_rcnn.yaml`, one
head epoch, a low score threshold so that the barely trained model still detects
something) and written out with `detseg export`. `detseg evaluate` on the run directory
(in-memory model through the eval pipeline), on the SavedModel (the exported graph in
process) and on the embedded server (the graph behind TF Serving's REST API and JSON)
must give the same COCO bbox and segm numbers and the same detections with the same
RLE masks. The served `:predict` answer itself must carry the masks in the documented
JSON form (docs/serving.md, "Masks over REST").

At this budget the model's AP is about 0, so equal COCO stats alone prove little: the
detection-by-detection comparison (boxes, scores, mask IoU) is what has teeth. Its masks
are probabilities near 0.5 over each box, the hardest case for equal thresholding.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from pycocotools import mask as mask_utils

from detseg.data.coco import load_coco
from detseg.cli import main
from detseg.serving.model_config import ModelEntry
from detseg.serving.server import ModelServer, ServerOptions
from detseg.training.config import load_config
from detseg.training.trainer import train
from detseg.training.training_data import synthetic_dir

pytestmark = pytest.mark.slow  # trains a Mask R-CNN (a few seconds of CPU), exports and serves it

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIG = REPO / "configs" / "smoke" / "mask_rcnn.yaml"
MODEL_NAME = "masks"
OVERRIDES = ("stage1.epochs=1", "stage2.epochs=0", "data.synthetic.num_images=16",
             # One epoch leaves every score low: keep them all so there is something to compare.
             "model.head.score_threshold=0.0",
             "model.head.max_detections=8")  # 8 full-size masks per image in each REST answer
IOU_TYPES = ("bbox", "segm")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_rcnn_run")
    config = load_config(SMOKE_CONFIG, [f"runs_dir={root}", *OVERRIDES])
    result = train(config, verbose=0, log=lambda message: None)
    val = synthetic_dir(config) / "annotations" / "instances_val.json"
    base = root / "exports" / MODEL_NAME
    assert main(["export", str(result.run_dir), "--model_base_path", str(base), "--model_name", MODEL_NAME]) == 0
    assert (base / "1" / "saved_model.pb").is_file()
    server = ModelServer([ModelEntry(MODEL_NAME, base)],
                         ServerOptions(port=None, rest_api_port=0, poll_interval_s=0, max_lifetime_s=300)).start()
    try:
        out = tmp_path_factory.mktemp("mask_rcnn_reports")
        sources = {"run_dir": [str(result.run_dir)], "saved_model": [str(base)],
                   "served": ["--server", server.rest_url, "--model-name", MODEL_NAME]}
        evaluations = {way: evaluate(val, out / way, source) for way, source in sources.items()}
        yield {"val": val, "server": server, "evaluations": evaluations}
    finally:
        server.stop()


def evaluate(val: Path, out: Path, source: list[str]) -> tuple[dict, list]:
    assert main(["evaluate", *source, "--annotations", str(val), "--out", str(out), "--examples", "1"]) == 0
    return json.loads((out / "report.json").read_text()), json.loads((out / "coco_results.json").read_text())


def test_the_barely_trained_model_detects_with_masks(served_run):
    report, results = served_run["evaluations"]["run_dir"]
    assert set(report["coco"]) == set(IOU_TYPES)
    assert len(results) > 0
    images = {r["image_id"] for r in results}
    assert len(images) == report["coco"]["segm"]["num_images"]  # every val image has detections
    for r in results:
        mask = mask_utils.decode(r["segmentation"])
        assert mask.any(), r  # no empty masks: the comparisons below compare real pixels
        assert mask.shape == tuple(r["segmentation"]["size"])


@pytest.mark.parametrize("way", ["saved_model", "served"])
def test_exported_and_served_reports_equal_the_run_directorys(served_run, way):
    reference, reference_results = served_run["evaluations"]["run_dir"]
    report, results = served_run["evaluations"][way]
    assert report["source"]["model"] != reference["source"]["model"]
    for iou_type in IOU_TYPES:
        ours, theirs = report["coco"][iou_type], reference["coco"][iou_type]
        assert ours["num_detections"] == theirs["num_detections"] == len(reference_results)
        for name, value in theirs["stats"].items():
            if value is None:
                assert ours["stats"][name] is None, (iou_type, name)
            else:
                # Masks may differ on a few pixels at the 0.5 threshold (cv2 vs tf resampling).
                assert ours["stats"][name] == pytest.approx(value, abs=0.02), (iou_type, name)


def paired(results: list, reference: list) -> list[tuple[dict, dict]]:
    """Each detection with its twin in `reference`: same image and category, nearest box.

    Order-free on purpose: a barely trained model gives near-equal scores, and their order
    after NMS may flip on a last-bit difference without anything being wrong.
    """
    assert sorted((r["image_id"], r["category_id"]) for r in results) == \
        sorted((r["image_id"], r["category_id"]) for r in reference)
    unused = list(reference)
    pairs = []
    for ours in results:
        candidates = [r for r in unused if (r["image_id"], r["category_id"]) == (ours["image_id"], ours["category_id"])]
        twin = min(candidates, key=lambda r: np.abs(np.subtract(r["bbox"], ours["bbox"])).max())
        unused.remove(twin)
        pairs.append((ours, twin))
    return pairs


@pytest.mark.parametrize("way", ["saved_model", "served"])
def test_exported_and_served_detections_and_masks_equal_the_run_directorys(served_run, way):
    _, reference = served_run["evaluations"]["run_dir"]
    _, results = served_run["evaluations"][way]
    for ours, theirs in paired(results, reference):
        # The exported graph letterboxes with tf.image.resize, the pipeline with OpenCV.
        np.testing.assert_allclose(ours["bbox"], theirs["bbox"], atol=0.05)
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-3)
        assert ours["segmentation"]["size"] == theirs["segmentation"]["size"]
        iou = mask_utils.iou([ours["segmentation"]], [theirs["segmentation"]], [0])[0, 0]
        assert iou > 0.95, (ours["image_id"], ours["category_id"], iou)


def test_a_rest_predict_answer_carries_full_size_masks(served_run):
    dataset = load_coco(served_run["val"])
    image = dataset.images[0]
    body = {"instances": [{"b64": base64.b64encode(dataset.image_path(image).read_bytes()).decode()}]}
    answer = requests.post(f"{served_run['server'].rest_url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    height, width = prediction["image_height"], prediction["image_width"]
    assert (height, width) == (image.height, image.width)
    masks = np.asarray(prediction["masks"])
    slots = len(prediction["scores"])
    assert masks.shape == (slots, height, width)  # one image: Hmax x Wmax is its own size
    assert set(np.unique(masks)) <= {0, 1}
    count = prediction["num_detections"]
    assert count > 0
    assert masks[:count].reshape(count, -1).any(axis=1).all()  # each detection has a non-empty mask
    assert not masks[count:].any()  # unused slots hold empty masks
    # The same image's first detection in the served evaluation: the same mask.
    _, served_results = served_run["evaluations"]["served"]
    first = next(r for r in served_results if r["image_id"] == image.id)
    np.testing.assert_array_equal(mask_utils.decode(first["segmentation"]), masks[0])
    x0, y0, x1, y1 = prediction["boxes"][0]
    np.testing.assert_allclose(first["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3)

