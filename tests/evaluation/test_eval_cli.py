"""`detseg evaluate` in a subprocess: report written, stats printed, errors as one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval_fixtures import detections, direct_cocoeval, write_images

REPO = Path(__file__).resolve().parents[2]


def run_detseg(*args):
    return subprocess.run([sys.executable, "-m", "detseg", "evaluate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_evaluate_writes_the_report_and_prints_pycocotools_numbers(coco_files, tmp_path):
    images = write_images(tmp_path / "images")
    out = tmp_path / "report"
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", coco_files["segm"], "--out", out,
                      "--iou-type", "both", "--images", images, "--examples", "2")
    assert done.returncode == 0, done.stderr
    for name in ("report.json", "report.md", "report.html", "plots/confusion_matrix.png",
                 "plots/segm_pr_curves.png", "examples/image_11.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    for iou_type in ("bbox", "segm"):
        direct = direct_cocoeval(coco_files["gt"], coco_files["segm"], iou_type)
        assert saved["coco"][iou_type]["stats_raw"] == [float(v) for v in direct.stats]
        assert f"AP75    {direct.stats[2]:.3f}" in done.stdout
    assert "COCO bbox" in done.stdout and "COCO segm" in done.stdout and "Traceback" not in done.stderr


def test_evaluate_without_images_notes_and_skips_the_examples(coco_files, tmp_path):
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", coco_files["bbox"],
                      "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    assert "no example pictures" in done.stderr
    assert json.loads((tmp_path / "r" / "report.json").read_text())["examples"] == []


@pytest.mark.parametrize("fault, expected", [
    ("broken", r"broken.json: invalid JSON at line 1"),
    ("unknown_ids", "unknown_ids.json: detection 12 (image_id 404): image_id 404 is not an image of"),
    ("missing", r"missing.json: file not found"),
])
def test_bad_input_exits_2_with_one_line(coco_files, tmp_path, fault, expected):
    path = tmp_path / f"{fault}.json"
    if fault == "broken":
        path.write_text("[{")
    elif fault == "unknown_ids":
        path.write_text(json.dumps(detections() + [{**detections()[0], "image_id": 404}]))
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", path, "--out", tmp_path / "r")
    assert done.returncode == 2
    first_line = done.stderr.splitlines()[0]
    assert first_line.startswith("detseg: error: ") and expected in first_line
    assert "Traceback" not in done.stderr and not (tmp_path / "r" / "report.json").exists()
