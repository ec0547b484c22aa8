"""Export: reload parity, TF Serving layout, models.config, saved_model_cli, label assets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from serving_test_models import FRAME, LABELS, MAX_DETECTIONS, random_pixels

from detseg.serving.export import ExportError, export_saved_model, load_saved_model, next_version, numeric_versions
from detseg.serving.model_config import read_model_config

FLOAT_OUTPUTS = ("boxes", "scores")


def _numpy(outputs: dict) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in outputs.items()}


def _assert_same_outputs(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> None:
    assert sorted(expected) == sorted(actual)
    for name, value in expected.items():
        if name in FLOAT_OUTPUTS:
            np.testing.assert_allclose(actual[name], value, atol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_reloaded_savedmodel_matches_in_memory_module(detection_module, exported_detection, sample_images):
    loaded = tf.saved_model.load(str(exported_detection / "1"))
    images = tf.constant(sample_images)
    in_memory = _numpy(detection_module.serving_default(images))
    reloaded = _numpy(loaded.signatures["serving_default"](images=images))
    _assert_same_outputs(in_memory, reloaded)
    assert in_memory["boxes"].shape == (4, MAX_DETECTIONS, 4)
    # One mask per detection slot in use (every image has MAX_DETECTIONS - 1), padded to the largest image.
    assert in_memory["masks"].shape == (4, MAX_DETECTIONS - 1, 80, 90)

    pixels = tf.constant(np.stack([random_pixels(50, 70, seed) for seed in range(3)]))
    _assert_same_outputs(_numpy(detection_module.serving_pixels(pixels)),
                         _numpy(loaded.signatures["serving_pixels"](pixels=pixels)))


def test_detection_outputs_follow_the_contract(detection_module, sample_images):
    outputs = _numpy(detection_module.serving_default(tf.constant(sample_images)))
    sizes = [(48, 64), (80, 40), (64, 64), (30, 90)]
    np.testing.assert_array_equal(outputs["num_detections"], [MAX_DETECTIONS - 1] * 4)
    np.testing.assert_array_equal(outputs["image_height"], [h for h, _ in sizes])
    for row, (height, width) in enumerate(sizes):
        boxes = outputs["boxes"][row]
        assert np.all(boxes[:, [0, 2]] <= width) and np.all(boxes[:, [1, 3]] <= height) and np.all(boxes >= 0)
        # The padding slot: zero box and score, class -1, empty name, and no mask.
        assert outputs["classes"][row, -1] == -1 and outputs["class_names"][row, -1] == b""
        assert outputs["scores"][row, -1] == 0 and not boxes[-1].any() and len(outputs["masks"][row]) == MAX_DETECTIONS - 1
        names = [n.decode() for n in outputs["class_names"][row, :-1]]
        assert names == [LABELS[c] for c in outputs["classes"][row, :-1]]
        assert not outputs["masks"][row, :, height:, :].any() and not outputs["masks"][row, :, :, width:].any()


def test_masks_cover_their_boxes_in_original_pixels(detection_module, sample_images):
    """The tiny model's frame masks fill its boxes, so served masks must fill the served boxes."""
    outputs = _numpy(detection_module.serving_default(tf.constant(sample_images[:2])))
    for row, (height, width) in enumerate([(48, 64), (80, 40)]):
        scale = FRAME / max(height, width)
        for k in range(int(outputs["num_detections"][row])):
            ys, xs = np.nonzero(outputs["masks"][row, k])
            x0, y0, x1, y1 = outputs["boxes"][row, k]
            if x1 - x0 < 8 / scale or y1 - y0 < 8 / scale:
                continue  # a box thinner than two mask cells may hold no cell centre
            tolerance = 4 / scale + 1  # one stride-4 mask cell, in original pixels
            assert abs(xs.min() - x0) <= tolerance and abs(xs.max() + 1 - x1) <= tolerance
            assert abs(ys.min() - y0) <= tolerance and abs(ys.max() + 1 - y1) <= tolerance


def test_export_writes_numbered_versions_atomically_and_models_config(tmp_path, detection_module):
    base = tmp_path / "models" / "shapes"
    first = export_saved_model(detection_module, base)
    second = export_saved_model(detection_module, base)
    assert (first.name, second.name) == ("1", "2")
    assert numeric_versions(base) == [1, 2] and next_version(base) == 3
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no temporary folder left behind
    assert (second / "assets" / "labels.txt").read_text().splitlines() == LABELS
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(detection_module, base, version=2)
    with pytest.raises(ExportError, match="positive integer"):
        export_saved_model(detection_module, base, version=0)
    entries = read_model_config(tmp_path / "models" / "models.config")
    assert [(e.name, e.base_path) for e in entries] == [("shapes", base.resolve())]


def test_export_keeps_other_models_in_models_config(tmp_path, exported_detection):
    config = tmp_path / "models.config"
    from detseg.serving.model_config import update_model_config

    update_model_config(config, "first", "/models/first")
    update_model_config(config, "second", str(exported_detection))
    update_model_config(config, "first", "/models/first_v2")
    entries = {e.name: e.base_path for e in read_model_config(config)}
    assert entries == {"first": Path("/models/first_v2"), "second": exported_detection}


@pytest.mark.slow  # starts TensorFlow again in a subprocess: ~6 s alone, 20 s on a busy machine
def test_saved_model_cli_lists_both_signatures(exported_detection):
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "show", "--all", "--dir", str(exported_detection / "1")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    default = text[text.index("signature_def['serving_default']"):text.index("signature_def['serving_pixels']")]
    assert "inputs['images']" in default and "DT_STRING" in default and "shape: (-1)" in default
    pixels = text[text.index("signature_def['serving_pixels']"):]
    assert "inputs['pixels']" in pixels and "DT_UINT8" in pixels and "shape: (-1, -1, -1, 3)" in pixels
    for section in (default, pixels):
        for output in ("boxes", "scores", "classes", "class_names", "num_detections", "masks"):
            assert f"outputs['{output}']" in section
        assert "tensorflow/serving/predict" in section


def test_corrupt_image_is_an_invalid_argument(detection_module):
    with pytest.raises(tf.errors.InvalidArgumentError):
        detection_module.serving_default(tf.constant([b"\x89PNG\r\n\x1a\n this is not an image"]))


def _no_gradient_warnings(records) -> list[str]:
    return [r.getMessage() for r in records if "unsaved custom gradients" in r.getMessage()]


def test_loading_an_export_is_quiet_about_the_gradients_it_leaves_out(tmp_path, caplog):
    """Exports omit gradient functions on purpose (`EXPORT_OPTIONS`); TensorFlow warns about
    that once per function on every load, which `load_saved_model` keeps out of the user's
    terminal (the demo printed it on `detseg serve`). Plain `tf.saved_model.load` must still
    warn here, or this test would pass for a model without custom-gradient ops (the smoke
    YOLO has them: SiLU)."""
    from detseg.serving.serving_module import serving_module_for
    from detseg.training.config import load_config
    from detseg.training.families import FAMILIES
    from detseg.training.transfer_stages import build_task_model

    config = load_config("smoke/yolo")
    model, _ = build_task_model(config, FAMILIES["yolo"], 3)
    module = serving_module_for(model, "detection", config.model.image_size, ["a", "b", "c"])
    version_dir = export_saved_model(module, tmp_path / "yolo", write_config=False)
    with caplog.at_level("WARNING", logger="absl"):
        tf.saved_model.load(str(version_dir))
    assert _no_gradient_warnings(caplog.records), "precondition: the export has custom-gradient ops"
    caplog.clear()
    with caplog.at_level("WARNING", logger="absl"):
        loaded = load_saved_model(version_dir)
    assert not _no_gradient_warnings(caplog.records)
    assert set(loaded.signatures) == {"serving_default", "serving_pixels"}
