"""`detseg` entry point: one sub-command module per job, errors as one readable line.

Each module in `COMMAND_MODULES` has `register(subparsers)`, which adds its parser(s)
and sets `func(args) -> int` (the exit code) as a default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

COMMAND_MODULES = (
    "detseg.cli.data_commands",
    "detseg.cli.demo_command",
    "detseg.cli.evaluate_command",
    "detseg.cli.serve_command",
    "detseg.cli.predict_command",
    "detseg.cli.train_command",
    "detseg.cli.export_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detseg", description="Object detection and segmentation on Keras/TensorFlow.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise to a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("detseg: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the user gets one line; DETSEG_DEBUG=1 shows the traceback
        if os.environ.get("DETSEG_DEBUG"):
            traceback.print_exc()
        print(f"detseg: error: {_one_line(error)}", file=sys.stderr)
        if not os.environ.get("DETSEG_DEBUG"):
            print("(set DETSEG_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2


def _one_line(error: Exception) -> str:
    """The error as the user should read it.

    A `DatasetError` raised inside a tf.data `numpy_function` reaches us wrapped in a
    multi-line TensorFlow error: the line carrying the original message is what matters.
    """
    text = str(error)
    for line in text.splitlines():
        if "DatasetError: " in line:
            return line.split("DatasetError: ", 1)[1].strip()
    return text if _is_user_error(error) else f"{type(error).__name__}: {text}"


def _is_user_error(error: Exception) -> bool:
    """Errors raised on purpose for bad input: their message already says what is wrong."""
    return isinstance(error, (ValueError, FileNotFoundError, FileExistsError, PermissionError))
