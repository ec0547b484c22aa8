"""`detseg predict` (local SavedModel and through the server) and `detseg serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from local_ports import unassigned_local_ports
from PIL import Image
from serving_test_models import LABELS, MODEL_NAME

from detseg.data.coco import decode_segmentation
from detseg.cli import main
from detseg.serving.client import ServingClient


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, sample_images) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, (data, suffix) in enumerate(zip(sample_images[:3], ["png", "jpg", "bmp"])):
        path = folder / f"image{index}.{suffix}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _read_records(out: Path, paths: list[Path]) -> list[dict]:
    return [json.loads((out / f"{p.stem}.json").read_text()) for p in paths]


def test_predict_with_a_local_savedmodel_writes_json_and_drawings(tmp_path, exported_detection, image_files, capsys):
    out = tmp_path / "local"
    assert main(["predict", *map(str, image_files), "--model", str(exported_detection), "--out", str(out)]) == 0
    assert "3 detections" in capsys.readouterr().out
    for path, record in zip(image_files, _read_records(out, image_files)):
        width, height = Image.open(path).size
        assert (record["task"], record["width"], record["height"]) == ("detection", width, height)
        assert len(record["detections"]) == 3  # the tiny model always reports K - 1 = 3
        for detection in record["detections"]:
            x0, y0, x1, y1 = detection["box"]
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
            assert detection["class_name"] == LABELS[detection["class"]]
            mask = decode_segmentation(detection["mask"], height, width)
            assert mask.shape == (height, width)
        drawing = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert drawing.shape == (height, width, 3)
        assert not np.array_equal(drawing, np.asarray(Image.open(path).convert("RGB")))  # boxes were drawn


def test_predict_through_the_server_matches_the_local_model(tmp_path, server, exported_detection, image_files):
    local, remote = tmp_path / "local", tmp_path / "remote"
    main(["predict", *map(str, image_files), "--model", str(exported_detection / "1"), "--out", str(local)])
    for address in (server.rest_url, f"grpc://{server.grpc_target}"):
        assert main(["predict", *map(str, image_files), "--server", address, "--model-name", MODEL_NAME,
                     "--out", str(remote)]) == 0
        for a, b in zip(_read_records(local, image_files), _read_records(remote, image_files)):
            assert a["detections"] == b["detections"]


def test_predict_and_serve_report_bad_arguments_in_one_line(tmp_path, image_files, capsys):
    assert main(["predict", str(image_files[0]), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a SavedModel (no saved_model.pb) nor a base path" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["predict", str(broken), "--server", "http://127.0.0.1:9", "--model-name", "x",
                 "--out", str(tmp_path / "o")]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert main(["serve", "--model_base_path", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.slow  # a second Python process imports TensorFlow and loads the model: 10-20 s
def test_serve_command_runs_a_server_from_models_config(exported_detection, sample_images):
    rest_port, grpc_port = unassigned_local_ports(2)  # the command reads port 0 as "off"
    config = exported_detection.parent / "models.config"
    process = subprocess.Popen(
        [sys.executable, "-m", "detseg", "serve", "--model_config_file", str(config), "--rest_api_port",
         str(rest_port), "--port", str(grpc_port), "--enable_batching", "--max_lifetime_s", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        lines = []
        while not any(line.startswith("REST:") for line in lines):
            line = process.stdout.readline()
            assert line, "detseg serve exited early:\n" + "".join(lines)
            lines.append(line)
        assert any(f"model {MODEL_NAME}:" in line and "versions [1]" in line for line in lines), lines
        for address in (f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"):
            client = ServingClient(address, MODEL_NAME)
            assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
            assert client.predict(sample_images[:2])["boxes"].shape == (2, 4, 4)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
