"""The `detseg` command: errors reach the user as one line that says what is wrong."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from detseg.data.errors import DatasetError
from detseg.cli import _one_line, main


def test_dataset_error_inside_tf_data_is_unwrapped_to_its_message():
    def fail(_):
        raise DatasetError("images/broken.png: not a PNG file")

    batches = tf.data.Dataset.range(1).map(lambda i: tf.numpy_function(fail, [i], tf.int64))
    with pytest.raises(tf.errors.OpError) as caught:
        next(iter(batches))
    assert "\n" in str(caught.value)  # TensorFlow wraps it in a multi-line message
    assert _one_line(caught.value) == "images/broken.png: not a PNG file"


def test_unexpected_errors_keep_their_type_name():
    assert _one_line(KeyError("boxes")) == "KeyError: 'boxes'"
    assert _one_line(ValueError("unknown key 'epochz'")) == "unknown key 'epochz'"


def test_command_prints_one_line_and_exits_2_without_traceback(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = subprocess.run([sys.executable, "-m", "detseg", "data", "stats", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("detseg: error:")]
    assert len(errors) == 1 and "broken.json: invalid JSON at line 1" in errors[0]


def test_main_returns_exit_code_of_the_command(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-images", "0"]) == 2
    assert "--num-images must be >= 1" in capsys.readouterr().err  # the flag, not the parameter
    assert not (tmp_path / "s").exists()


def test_train_takes_a_config_file_or_a_packaged_config_name(capsys):
    from detseg.cli import build_parser

    args = build_parser().parse_args(["train", "yolo_synthetic", "stage2.epochs=1"])
    assert args.config == "yolo_synthetic" and args.overrides == ["stage2.epochs=1"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "packaged config name" in " ".join(capsys.readouterr().out.split())  # help text is wrapped
    assert main(["train", "no_such_config", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "no_such_config: no such config file" in error and "smoke/yolo" in error
