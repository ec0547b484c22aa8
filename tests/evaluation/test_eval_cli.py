"""`detseg evaluate` in a subprocess: report written, stats printed, errors as one line."""

import argparse
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


@pytest.mark.parametrize("fault, expected", [
    ("negative_width", "negative_width.json: detection 12 (image_id 11): bbox [2, 2, -20, 16] has zero or negative"),
    ("fractional_id", "fractional_id.json: detection 12 (image_id 1.7): image_id must be an integer, got a number 1.7"),
    ("string_score", 'string_score.json: detection 12 (image_id 11): score must be a number, got a string "0.9"'),
    ("segm_of_boxes", "segm_of_boxes.json: segm (mask) evaluation needs segmentations, but the detections hold "
                      "boxes only"),
])
def test_bad_detections_exit_2_with_one_line_and_no_report(coco_files, tmp_path, fault, expected):
    bad = {"negative_width": {"bbox": [2, 2, -20, 16]}, "fractional_id": {"image_id": 1.7},
           "string_score": {"score": "0.9"}, "segm_of_boxes": {}}[fault]
    path = tmp_path / f"{fault}.json"
    path.write_text(json.dumps(detections() + [{**detections()[0], **bad}]))
    extra = ("--iou-type", "segm") if fault == "segm_of_boxes" else ()
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", path, "--out", tmp_path / "r", *extra)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"detseg: error: {tmp_path}/{expected}")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_empty_results_score_zeros_and_say_so_in_one_line(coco_files, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", empty, "--out", tmp_path / "r",
                      "--examples", "0")
    assert done.returncode == 0, done.stderr
    assert "  AP      0.000" in done.stdout
    notes = [line for line in done.stderr.splitlines() if "no detections" in line]
    assert notes == [f"detseg: note: {empty} holds no detections: every measurable stat is 0"]
    assert "%|" not in done.stderr  # a few images, not a terminal: no progress bar


def test_masks_only_results_default_to_segm_and_the_report_names_the_area_convention(coco_files, tmp_path):
    done = run_detseg("--annotations", coco_files["gt"], "--predictions", coco_files["segm"], "--out",
                      tmp_path / "r", "--segm-area", "mask", "--examples", "0")
    assert done.returncode == 0, done.stderr
    assert "COCO segm" in done.stdout and "COCO bbox" not in done.stdout
    assert "object areas from masks (--segm-area mask)" in done.stdout
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(saved["coco"]) == ["segm"] and saved["settings"]["segm_object_areas"] == "mask"
    assert "object areas from masks (--segm-area mask)" in (tmp_path / "r" / "report.md").read_text()


def test_many_images_show_progress_on_stderr_even_without_a_terminal(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": 32, "width": 32} for i in range(1, 251)]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100.0, "iscrowd": 0}
                   for i in range(1, 251)]
    gt = tmp_path / "many.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations,
                              "categories": [{"id": 1, "name": "thing"}]}))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [5, 4, 10, 10], "score": 0.5}
                                   for i in range(1, 251)]))
    done = run_detseg("--annotations", gt, "--predictions", results, "--out", tmp_path / "r", "--examples", "0")
    assert done.returncode == 0, done.stderr
    assert "COCO bbox: 100%" in done.stderr and "%|" not in done.stdout


def test_server_arguments_are_checked_before_tensorflow_loads(coco_files, tmp_path):
    script = f"""
import sys
from detseg.cli import main
gt, out = {str(coco_files["gt"])!r}, {str(tmp_path / "r")!r}
for extra in (["--server", "ftp://host:1", "--model-name", "m"], ["--server", "http://127.0.0.1:9"],
              ["--server", "http://127.0.0.1:9", "--model-name", "m", "--version", "0"],
              ["--server", "grpc://127.0.0.1:9", "--model-name", "m", "--semantic-masks", "nowhere"],
              ["--server", "127.0.0.1:9", "--model-name", "m", "--annotations", "missing.json"]):
    assert main(["evaluate", "--annotations", gt, "--out", out, *extra]) == 2
    assert "tensorflow" not in sys.modules, extra
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("detseg: error:")]
    assert errors[0] == "detseg: error: --server ftp://host:1: expected http://host:port (REST) or grpc://host:port (gRPC)"
    assert errors[1] == "detseg: error: --server needs --model-name NAME (the model's name on the server)"
    assert errors[2] == "detseg: error: --version must be >= 1, got 0"
    assert errors[3] == "detseg: error: --semantic-masks nowhere: no such folder"
    assert errors[4] == "detseg: error: missing.json: file not found"


def test_every_evaluate_option_has_help_text_with_its_default():
    from detseg.cli import build_parser
    from detseg.cli.evaluate_command import SEGM_AREA_CHOICES
    from detseg.evaluation.coco_eval import SEGM_AREAS

    assert SEGM_AREA_CHOICES == SEGM_AREAS
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    evaluate = subparsers.choices["evaluate"]
    for action in evaluate._actions:
        if action.default == argparse.SUPPRESS:  # --help, and flags shared by every command
            continue
        assert action.help and len(action.help) > 15, action.dest
        assert "default" in action.help or "required" in action.help, action.dest
