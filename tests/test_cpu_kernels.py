"""Training commands turn on TensorFlow's oneDNN CPU kernels; the others keep TensorFlow's default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from detseg.cli import prefer_onednn_for

ONEDNN_AFTER = ("import sys; from detseg.cli import prefer_onednn_for; prefer_onednn_for(sys.argv[1]); "
                "import tensorflow; from tensorflow.python.util import _pywrap_util_port; "
                "print(_pywrap_util_port.IsMklEnabled())")


def env_without_onednn(**extra: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


@pytest.mark.parametrize("command, setting, expected", [
    ("train", None, "True"), ("tune", None, "True"), ("train", "0", "False")])
def test_a_training_command_loads_tensorflow_with_onednn_unless_the_user_said_no(command, setting, expected):
    env = env_without_onednn(**({"TF_ENABLE_ONEDNN_OPTS": setting} if setting else {}))
    done = subprocess.run([sys.executable, "-c", ONEDNN_AFTER, command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("command", ["serve", "predict", "export", "evaluate"])
def test_serving_and_predicting_commands_leave_the_setting_alone(command, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    prefer_onednn_for(command)
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
