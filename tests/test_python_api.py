"""README.md's "Python API" script, run as written on the smoke config.

The test takes the script from the README (the first ```python block after the "Python
API" heading), executes it as a module (its `if __name__ == "__main__"` part does not
run) and calls its `main` with the smoke YOLO config and a temporary folder: the code a
user copies is the code that is tested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains the smoke YOLO (seconds), exports it and serves it

README = Path(__file__).resolve().parents[1] / "README.md"
SMOKE_OVERRIDES = ("stage1.epochs=1", "stage2.epochs=0")  # stage 1 only: the shortest whole run


def readme_script() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md's Python API section has no ```python block"
    return match.group(1)


def test_readme_python_api_script_trains_evaluates_exports_serves_and_predicts(tmp_path, capsys):
    namespace = {"__name__": "readme_python_api"}
    exec(compile(readme_script(), str(README), "exec"), namespace)
    result, evaluation, version_dir, outputs, predictions = namespace["main"](
        "smoke/yolo", SMOKE_OVERRIDES, tmp_path / "work")

    assert result.run_dir == tmp_path / "work" / "runs" / "smoke_yolo"
    assert (result.run_dir / "model.keras").is_file()
    assert result.headline_metric in result.metrics
    report = json.loads(evaluation.files["json"].read_text())
    assert report["coco"]["bbox"]["stats"].keys() == evaluation.report["coco"]["bbox"]["stats"].keys()
    assert evaluation.files["html"].is_file() and evaluation.files["results"].is_file()
    assert (version_dir / "saved_model.pb").is_file() and version_dir.name == "1"

    assert len(outputs["num_detections"]) == len(predictions) == 4
    for output_count, prediction in zip(outputs["num_detections"], predictions):
        assert prediction.json_path.is_file() and prediction.png_path.is_file()
        assert json.loads(prediction.json_path.read_text()) == prediction.record
        assert prediction.record["task"] == "detection"
        assert len(prediction.record["detections"]) <= int(output_count)
        boxes = np.array([d["box"] for d in prediction.record["detections"]]).reshape(-1, 4)
        assert np.all(boxes[:, :2] <= boxes[:, 2:])
    printed = capsys.readouterr().out
    assert "bbox AP" in printed and "detections per image:" in printed
