"""`detseg evaluate` on a real training run: the run directory, its export, and the export served.

A tiny cls+loc run is trained with the smoke config (`configs/smoke/clsloc.yaml`, fewer
epochs) by the trainer itself. Evaluating its run directory must give the numbers the
trainer wrote to `evaluation.json` (the family's own evaluation, in the letterbox frame:
a separate code path); the SavedModel written by `detseg export` and the same SavedModel served over REST
must give the same predictions and report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detseg.cli import main
from detseg.serving.model_config import ModelEntry
from detseg.serving.server import ModelServer, ServerOptions
from detseg.training.config import load_config
from detseg.training.trainer import train
from detseg.training.training_data import synthetic_dir

pytestmark = pytest.mark.slow  # trains a model (a few seconds of CPU) and exports it

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIG = REPO / "configs" / "smoke" / "clsloc.yaml"
MODEL_NAME = "clsloc"
METRICS = ("accuracy", "mean_iou", "localization_accuracy", "num_samples")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clsloc_run")
    config = load_config(SMOKE_CONFIG, [f"runs_dir={root}", "stage1.epochs=1", "stage2.epochs=0"])
    result = train(config, verbose=0, log=lambda message: None)
    val = synthetic_dir(config) / "annotations" / "instances_val.json"
    base = root / "exports" / MODEL_NAME
    assert main(["export", str(result.run_dir), "--model_base_path", str(base), "--model_name", MODEL_NAME]) == 0
    version = base / "1"
    assert (version / "saved_model.pb").is_file() and (root / "exports" / "models.config").is_file()
    server = ModelServer([ModelEntry(MODEL_NAME, version.parent)],
                         ServerOptions(port=None, rest_api_port=0, poll_interval_s=0, max_lifetime_s=300)).start()
    yield {"run_dir": result.run_dir, "val": val, "export": version.parent, "server": server,
           "trainer_metrics": result.metrics}
    server.stop()


def evaluate(trained, out: Path, *source: str) -> tuple[dict, list]:
    code = main(["evaluate", *source, "--annotations", str(trained["val"]), "--out", str(out), "--examples", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    return report, json.loads((out / "coco_results.json").read_text())


def test_run_directory_evaluation_equals_the_trainers_own(trained, tmp_path):
    report, results = evaluate(trained, tmp_path, str(trained["run_dir"]))
    assert report["kind"] == "classification_localization"
    ours, trainers = report["classification_localization"], trained["trainer_metrics"]
    assert ours["num_samples"] == trainers["num_samples"] > 0
    assert ours["accuracy"] == pytest.approx(trainers["accuracy"])
    assert ours["localization_accuracy"] == pytest.approx(trainers["localization_accuracy"])
    # Square synthetic images: the letterbox is a pure scale, so the IoUs are the same.
    assert ours["mean_iou"] == pytest.approx(trainers["mean_iou"], abs=1e-5)
    assert ours["confusion_matrix"] == trainers["confusion_matrix"]
    assert len(results) == trainers["num_samples"]
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    assert (tmp_path / "examples").is_dir() and (tmp_path / "report.html").is_file()


def test_saved_model_and_served_model_agree_with_the_run_directory(trained, tmp_path):
    reference, reference_results = evaluate(trained, tmp_path / "run", str(trained["run_dir"]))
    for way, source in (("saved_model", [str(trained["export"])]),
                        ("served", ["--server", trained["server"].rest_url, "--model-name", MODEL_NAME])):
        report, results = evaluate(trained, tmp_path / way, *source)
        for key in METRICS:
            assert report["classification_localization"][key] == pytest.approx(
                reference["classification_localization"][key], abs=1e-4), (way, key)
        assert [(r["image_id"], r["category_id"]) for r in results] == \
            [(r["image_id"], r["category_id"]) for r in reference_results], way
        # The exported graph letterboxes with tf.image.resize, the pipeline with OpenCV:
        # equal up to a grey level, so the boxes agree to a small fraction of a pixel.
        np.testing.assert_allclose([r["bbox"] for r in results], [r["bbox"] for r in reference_results],
                                   atol=0.05, err_msg=way)
        np.testing.assert_allclose([r["score"] for r in results], [r["score"] for r in reference_results],
                                   atol=1e-3, err_msg=way)
        assert report["source"]["model"] != reference["source"]["model"]


def test_a_run_directory_without_its_final_model_is_named(trained, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((trained["run_dir"] / "config.yaml").read_text())
    assert main(["evaluate", str(unfinished), "--annotations", str(trained["val"]), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err.splitlines()[0]
    assert "not a finished run directory" in error and str(unfinished) in error
