"""The command line speaks the user's language: flags, help, errors, no TensorFlow chatter.

Every sub-command is reached through `build_parser()`, so a command added later is held
to the same rules without a new test.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorflow as tf

from detseg.cli import DEBUG_HINT, _one_line, _report, build_parser, main
from detseg.cli.arguments import dashed, iter_parsers, shows_default, underscored
from detseg.cli.tensorflow_noise import NOISE

REPO = Path(__file__).resolve().parents[1]


def _arguments(parser: argparse.ArgumentParser):
    """The arguments a user types (not -h, not the sub-command slot, not --verbose's twins)."""
    for action in parser._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            yield action


def test_every_option_of_every_command_has_help_text():
    missing = [f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
               for parser in iter_parsers(build_parser()) for action in _arguments(parser)
               if not (action.help or "").strip() or action.help == argparse.SUPPRESS]
    assert not missing, "arguments without help text: " + ", ".join(missing)


def test_help_shows_every_default_worth_showing():
    unshown = []
    for parser in iter_parsers(build_parser()):
        text = " ".join(parser.format_help().split())  # help is wrapped: compare unwrapped
        for action in _arguments(parser):
            if shows_default(action) and "default" not in (action.help or "").lower():
                if f"(default: {action.default})" not in text:
                    unshown.append(f"{parser.prog} {action.option_strings[0]}")
    assert not unshown, "defaults not shown: " + ", ".join(unshown)
    serve = next(parser for parser in iter_parsers(build_parser()) if parser.prog == "detseg serve")
    serve_help = " ".join(serve.format_help().split())
    assert "--rest-api-port REST_API_PORT REST port (0 = no REST API) (default: 8501)" in serve_help


def test_every_long_option_takes_both_spellings_and_help_shows_dashes():
    for parser in iter_parsers(build_parser()):
        for action in _arguments(parser):
            for option in action.option_strings:
                assert "_" not in option, f"{parser.prog}: help shows {option}"
                if option.startswith("--"):
                    assert parser._option_string_actions[dashed(option)] is action
                    assert parser._option_string_actions[underscored(option)] is action


def _fake_run_directory(root: Path) -> Path:
    root.mkdir()
    for name in ("config.yaml", "label_map.json", "model.keras"):
        (root / name).write_text("")
    return root


def test_export_and_serve_parse_either_spelling(tmp_path):
    run = _fake_run_directory(tmp_path / "run")
    parse = build_parser().parse_args
    for spelling in (["--model-name", "shapes", "--model_base_path", str(tmp_path / "m")],
                     ["--model_name", "shapes", "--model-base-path", str(tmp_path / "m")]):
        args = parse(["export", str(run), *spelling])
        assert (args.model_name, args.model_base_path) == ("shapes", tmp_path / "m")
    args = parse(["serve", "--model_base_path", str(tmp_path), "--rest_api_port", "0", "--enable_batching",
                  "--max-batch-size", "4"])
    assert (args.model_base_path, args.rest_api_port, args.enable_batching, args.max_batch_size) == \
        (tmp_path, 0, True, 4)
    assert parse(["serve", "--model_base_path", str(tmp_path), "--max_batch", "3"]).max_batch_size == 3
    assert parse(["--verbose", "data", "stats", "x.json"]).verbose
    assert parse(["data", "stats", "x.json", "--verbose"]).verbose
    assert not parse(["data", "stats", "x.json"]).verbose


def test_path_errors_name_the_users_path_in_plain_words(tmp_path):
    exists = FileExistsError(17, "File exists", "afile")
    assert _one_line(exists) == "afile: already exists"
    rename = IsADirectoryError(21, "Is a directory", str(tmp_path / ".imgs.onoyez65.tmp"), str(tmp_path / "imgs"))
    assert _one_line(rename) == f"{tmp_path / 'imgs'}: is a folder, where a file is needed"
    staged = PermissionError(13, "Permission denied", str(tmp_path / ".a.json.x1y2.tmp" / "a.json"))
    assert _one_line(staged) == f"{tmp_path / 'a.json'}: permission denied"
    assert _one_line(FileNotFoundError("x.json: no such file")) == "x.json: no such file"


def test_user_errors_get_no_debug_hint_unexpected_ones_do(tmp_path, capsys):
    assert _report(FileExistsError(17, "File exists", "afile"), debug=False) == 2
    assert capsys.readouterr().err == "detseg: error: afile: already exists\n"
    assert _report(ValueError("--classes: no class names given"), debug=False) == 2
    assert capsys.readouterr().err == "detseg: error: --classes: no class names given\n"
    assert _report(KeyError("boxes"), debug=False) == 2
    assert capsys.readouterr().err == f"detseg: error: KeyError: 'boxes'\n{DEBUG_HINT}\n"
    assert main(["serve", "--model_base_path", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("detseg serve: error: argument --model-base-path:") and "no such folder" in error
    assert "DETSEG_DEBUG" not in error and "usage:" not in error


BAD_ARGUMENTS = [  # (command, what its one error line must say)
    (["predict", "{tmp}/nofile.png", "--model", "{tmp}", "--out", "{tmp}/o"], "nofile.png: no such file"),
    (["predict", "{image}", "--model", "{tmp}", "--out", "{tmp}/o"], "not a SavedModel (no saved_model.pb)"),
    (["predict", "{image}", "--server", "http://127.0.0.1:9", "--out", "{tmp}/o"], "--server needs --model-name"),
    (["predict", "{image}", "--model", "{tmp}/m", "--min-score", "2", "--out", "{tmp}/o"],
     "argument --min-score: must be between 0 and 1, got 2"),
    (["export", "{tmp}", "--model-base-path", "{tmp}/e"], "not a finished run directory (config.yaml is missing)"),
    (["export", "{run}", "--model-base-path", "{tmp}/e", "--version", "0"], "argument --version: must be at least 1"),
    (["serve", "--model_config_file", "{tmp}/models.config"], "models.config"),
    (["serve", "--model_base_path", "{tmp}", "--max_batch_size", "0"], "--max-batch-size: must be at least 1"),
    (["train", "{tmp}/missing.yaml"], "missing.yaml: no such config file"),
    (["demo", "--out", "{image}"], "is a file; give a folder"),
]


def test_bad_arguments_are_answered_before_tensorflow_is_imported(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "models.config").write_text("model_config_list { config { nam: 'x' } }")
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    run = _fake_run_directory(tmp_path / "run")
    commands = [[part.format(tmp=tmp_path, image=image, run=run) for part in command]
                for command, _ in BAD_ARGUMENTS]
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from detseg.cli import main
        answers = []
        for argv in {commands!r}:
            with contextlib.redirect_stderr(io.StringIO()) as stderr:
                answers.append((main(argv), stderr.getvalue()))
        print(json.dumps({{"answers": answers, "tensorflow": "tensorflow" in sys.modules}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["tensorflow"] is False
    for (command, expected), (code, stderr) in zip(BAD_ARGUMENTS, outcome["answers"]):
        assert code == 2 and expected in stderr, (command, stderr)
        assert len(stderr.strip().splitlines()) <= 2 and "Traceback" not in stderr, stderr


def test_closed_stdout_pipe_ends_quietly(tmp_path):
    synth = subprocess.run([sys.executable, "-m", "detseg", "data", "synth", "--out", str(tmp_path / "s"),
                            "--num-images", "4", "--image-size", "64"], capture_output=True, timeout=120, cwd=REPO)
    assert synth.returncode == 0, synth.stderr
    annotations = next((tmp_path / "s").rglob("*train*.json"))
    # `detseg data stats --json | head -0`, and help text (buffered, written at exit), with
    # stdout buffered as in a user's shell (PYTHONUNBUFFERED would hide the exit-time flush).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    for command in (["data", "stats", str(annotations), "--json"], ["data", "--help"]):
        process = subprocess.Popen([sys.executable, "-m", "detseg", *command], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=REPO, env=env)
        process.stdout.close()  # the reader is gone before the first line
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) in (0, 141), stderr
        assert stderr == "", stderr  # no traceback, no "Exception ignored ... BrokenPipeError"


@pytest.fixture(scope="module")
def tiny_saved_model(tmp_path_factory) -> Path:
    """A classification + localization SavedModel that answers the same for every image."""

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, images):
            count = tf.shape(images)[0]
            return {"class": tf.zeros([count], tf.int32), "score": tf.fill([count], 0.9),
                    "box": tf.tile([[1.0, 1.0, 6.0, 6.0]], [count, 1]), "class_name": tf.fill([count], "thing")}

    path = tmp_path_factory.mktemp("tiny_model") / "1"
    module = Constant()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_noise_pattern_drops_tensorflow_lines_only():
    noise = [
        "I0000 00:00:1796592575.378677    4899 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
        "E0000 00:00:1796592632.104609    6184 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "W0000 00:00:1796592632.1    6184 loop_optimizer.cc:934] Skipping loop optimization",
        "2025-01-01 12:00:00.123456: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.",
        "WARNING:tensorflow:5 out of the last 5 calls to <function f> triggered tf.function retracing.",
    ]
    kept = ["detseg: error: a.png: no such file", "detseg train: stage 1: epoch 1/2", "WARNING: disk almost full",
            "I0 is a fine class name"]
    assert all(NOISE.match(line) for line in noise)
    assert not any(NOISE.match(line) for line in kept)


@pytest.mark.slow  # a second Python process imports TensorFlow: about 12 s
def test_commands_print_no_tensorflow_noise(tmp_path, tiny_saved_model):
    image = tmp_path / "a.png"
    tf.io.write_file(str(image), tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)))
    command = [sys.executable, "-m", "detseg", "predict", str(image), "--model", str(tiny_saved_model),
               "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "a.json").read_text())["class_name"] == "thing"
    # The machine's TF lines (cudart, cuInit, oneDNN, CPU instructions...) are gone; with
    # DETSEG_DEBUG=1 (filter off) this test was seen to fail on the cudart/absl lines.
    assert done.stderr == "", done.stderr
