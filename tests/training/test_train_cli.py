"""`detseg train` and `detseg pretrain` through the real command line (subprocesses).

A whole `detseg train` of the smoke config, its summary and run directory are checked in
test_train_resume.py, which runs one (killed, then resumed) anyway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"


def detseg(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "detseg", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_config_error_is_one_line_naming_the_key(tmp_path):
    run = detseg("train", str(SMOKE), f"runs_dir={tmp_path}", "stage1.epocs=2")
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("detseg: error")]
    assert len(lines) == 1
    assert "'stage1.epocs'" in lines[0] and "epochs" in lines[0]
    assert not (tmp_path / "smoke_clsloc").exists()


def test_pretrain_on_coco_crops_then_train_from_those_weights(synthetic_dir, tmp_path):
    out = tmp_path / "tiny.weights.h5"
    run = detseg("pretrain", "--data", str(synthetic_dir / "annotations" / "instances_train.json"),
                 "--backbone", "tiny", "--image-size", "32", "--epochs", "1", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.is_file()
    description = json.loads(out.with_name("tiny.json").read_text())
    assert description["classes"] == ["circle", "rectangle", "triangle"] and description["num_samples"] > 0

    from detseg.models.backbones.registry import build_backbone
    from detseg.models.backbones.transfer import weights_fingerprint

    pretrained = build_backbone("tiny", (64, 64), str(out))
    assert weights_fingerprint(pretrained) != weights_fingerprint(build_backbone("tiny", (64, 64), None))


def test_pretrain_on_a_folder_per_class(tmp_path):
    rng = np.random.default_rng(0)
    for name, value in (("dark", 40), ("light", 220)):
        (tmp_path / "set" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(value, 10, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "set" / name / f"{i}.png")
    out = tmp_path / "folders.weights.h5"
    run = detseg("pretrain", "--data", str(tmp_path / "set"), "--backbone", "tiny", "--image-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(out.with_name("folders.json").read_text())["classes"] == ["dark", "light"]
    assert "2 classes" in run.stdout


def test_pretrain_errors_are_named(tmp_path, synthetic_dir):
    from detseg.data.errors import DatasetError
    from detseg.training.pretrain import pretrain_backbone

    annotations = synthetic_dir / "annotations" / "instances_train.json"
    with pytest.raises(ValueError, match=r"backbone\.h5: the file name must end with '\.weights\.h5'"):
        pretrain_backbone(annotations, "tiny", 32, 1, tmp_path / "backbone.h5")
    with pytest.raises(DatasetError, match="missing.json: not found"):
        pretrain_backbone(tmp_path / "missing.json", "tiny", 32, 1, tmp_path / "x.weights.h5")
    (tmp_path / "one_class" / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match="at least 2 class folders"):
        pretrain_backbone(tmp_path / "one_class", "tiny", 32, 1, tmp_path / "x.weights.h5")
