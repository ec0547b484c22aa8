"""`detseg export --ensemble` and `detseg evaluate --ensemble` on the shared YOLO smoke run.

Members: the smoke run and a copy whose kernels are perturbed by 5 % (no extra training).
The exported ensemble reloads and serves, in original pixels, what the in-memory ensemble
(`model_sources.load_ensemble_runs`, the loader `evaluate --ensemble` uses) predicts on the
same images, and that differs from either member alone; evaluating the export and the
in-memory ensemble gives the same COCO numbers; runs that differ in family, class names or
image size are refused in one line naming them, before any model loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from detseg.cli import main
from detseg.serving.serving_module import PIXELS_SIGNATURE
from detseg.training.run_model import RUN_FILES

pytestmark = pytest.mark.slow  # one 2-member export (~25 CPU s per member) and two evaluations


@pytest.fixture(scope="module")
def members(smoke_run, tmp_path_factory) -> tuple[Path, Path]:
    """The YOLO smoke run and a copy of it with every kernel scaled by 1 + 5 % noise."""
    run = Path(smoke_run("yolo").result.run_dir)
    copy = tmp_path_factory.mktemp("ensemble") / "perturbed"
    copy.mkdir()
    for name in RUN_FILES:
        shutil.copy(run / name, copy / name)
    model = keras.saving.load_model(copy / "model.keras", compile=False)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if "kernel" in variable.path:
            value = np.asarray(variable)
            variable.assign(value * (1 + 0.05 * rng.standard_normal(value.shape)).astype(value.dtype))
    model.save(copy / "model.keras")
    return run, copy


@pytest.fixture(scope="module")
def exported(members, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("exports") / "yolo_ensemble"
    assert main(["export", "--ensemble", *map(str, members), "--model-base-path", str(base)]) == 0
    return base


def _test_annotations(run: Path) -> Path:
    """The test split of the synthetic data the smoke run trained on (64 px images)."""
    return next(run.parent.glob("synthetic/*/annotations/instances_test.json"))


def test_the_exported_ensemble_serves_what_the_in_memory_ensemble_predicts(members, exported):
    from detseg.workflows.model_sources import load_ensemble_runs

    ensemble = load_ensemble_runs(members)
    images = sorted(_test_annotations(members[0]).parent.parent.glob("images/*.png"))[:3]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
    assert pixels.shape[1:3] == (ensemble.image_size,) * 2  # the letterbox is the identity: frame = original
    served = tf.saved_model.load(str(exported / "1")).signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels))
    expected = ensemble.model.predict_step(tf.constant(pixels, tf.float32))
    counts = served["num_detections"].numpy()
    np.testing.assert_array_equal(counts, expected["num_detections"])
    assert counts.min() > 0
    for row, count in enumerate(counts):
        np.testing.assert_allclose(served["boxes"][row, :count], expected["boxes"][row, :count], atol=1e-3)
        np.testing.assert_allclose(served["scores"][row, :count], expected["scores"][row, :count], atol=1e-5)
        np.testing.assert_array_equal(served["classes"][row, :count], expected["classes"][row, :count])
    for member in ensemble.model.members:  # the graph merged both members: neither alone gives this
        alone = member.predict_step(tf.constant(pixels, tf.float32))
        assert not np.array_equal(alone["scores"].numpy(), served["scores"].numpy())


def test_evaluating_the_export_and_the_in_memory_ensemble_gives_the_same_numbers(members, exported, tmp_path):
    annotations = _test_annotations(members[0])
    common = ["--annotations", str(annotations), "--examples", "0"]
    assert main(["evaluate", "--ensemble", *map(str, members), *common, "--out", str(tmp_path / "memory")]) == 0
    assert main(["evaluate", str(exported), *common, "--out", str(tmp_path / "export")]) == 0
    memory, export = (json.loads((tmp_path / name / "report.json").read_text())["coco"]["bbox"]["stats"]
                      for name in ("memory", "export"))
    assert memory["AP50"] > 0
    for stat in ("AP", "AP50", "AR100"):
        assert memory[stat] == pytest.approx(export[stat], abs=1e-3), stat


def _altered_copy(run: Path, folder: Path, family=None, image_size=None, names=None) -> Path:
    """A run directory like `run` but for the given fields; its model.keras is not a model,
    so a refusal that came after loading the models would fail differently."""
    folder.mkdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    if family is not None:
        config["model"]["family"] = family
        config["model"]["head"] = {"class_names": config["model"]["head"]["class_names"]}
    if image_size is not None:
        config["model"]["image_size"] = image_size
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    label_map = json.loads((run / "label_map.json").read_text())
    for entry, name in zip(label_map["classes"], names or ()):
        entry["name"] = name
    (folder / "label_map.json").write_text(json.dumps(label_map))
    (folder / "model.keras").write_bytes(b"not a model")
    return folder


def test_runs_that_differ_are_refused_in_one_line_naming_them(members, tmp_path, capsys):
    run = members[0]
    ssd = _altered_copy(run, tmp_path / "ssd_run", family="ssd")
    sized = _altered_copy(run, tmp_path / "sized_run", image_size=96, names=["disc", "box", "wedge"])
    for command in (["export", "--ensemble", str(run), str(ssd), str(sized), "--model-base-path", str(tmp_path / "e")],
                    ["evaluate", "--ensemble", str(run), str(ssd), str(sized), "--annotations",
                     str(_test_annotations(run)), "--out", str(tmp_path / "report")]):
        assert main(command) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1, message
        assert f"against {run}," in message and f"{ssd} has family ssd (not yolo)" in message
        assert f"{sized} has class names ['disc', 'box', 'wedge'] (not ['circle', 'rectangle', 'triangle']); " \
               f"image size 96 (not 64)" in message
    assert not (tmp_path / "e").exists() and not (tmp_path / "report").exists()
