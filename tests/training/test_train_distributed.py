"""`--strategy mirrored` on two logical CPU devices and `--strategy multiworker` with two
worker processes on 127.0.0.1, each training the smoke config for a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_ports import unassigned_local_ports

from detseg.data.synthetic import ensure_synthetic
from detseg.training.config import load_config
from detseg.training.training_data import synthetic_dir

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"
pytestmark = pytest.mark.slow
SHORT = ["stage1.epochs=1", "stage2.epochs=1", "early_stopping.enabled=false"]

# Splits the CPU into two logical devices (only possible before TensorFlow starts), then
# runs the real command line.
MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from detseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def detseg_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    args = ["train", str(SMOKE), f"runs_dir={tmp_path}", *SHORT, "--strategy", "mirrored", "--quiet"]
    run = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, *args], cwd=REPO, env=detseg_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 replica(s) (mirrored)" in run.stderr
    run_dir = load_config(SMOKE, [f"runs_dir={tmp_path}"]).run_dir
    assert json.loads((run_dir / "evaluation.json").read_text())["num_samples"] > 0
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["run_done"] and state["optimizer_iterations"] > 0


def test_multiworker_strategy_with_two_workers_on_localhost(tmp_path):
    overrides = [f"runs_dir={tmp_path}", *SHORT]
    config = load_config(SMOKE, overrides)
    synthetic = config.data.synthetic
    ensure_synthetic(synthetic_dir(config), synthetic.num_images, synthetic.image_size, synthetic.seed)
    workers = [f"127.0.0.1:{port}" for port in unassigned_local_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "detseg", "train", str(SMOKE), *overrides, "--strategy", "multiworker",
             "--quiet"], cwd=REPO, env=detseg_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "2 replica(s) (multiworker)" in stderr
    chief, other = (json.loads(stdout) for stdout, _ in outputs)
    assert chief == other  # both workers hold the same final model
    state = json.loads((config.run_dir / "checkpoints" / "state.json").read_text())
    assert state["run_done"]
