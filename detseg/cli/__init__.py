"""`detseg` entry point: one sub-command module per job, errors as one readable line.

Each module in `COMMAND_MODULES` has `register(subparsers)`, which adds its parser(s)
and sets `func(args) -> int` (the exit code) as a default. `build_parser` then gives every
parser the same manners (`detseg.cli.arguments`): both spellings of each long option,
defaults in the help, one-line argument errors, the global `--verbose`.

`main` keeps TensorFlow's log chatter off stderr (`detseg.cli.tensorflow_noise`) unless
`--verbose` or `DETSEG_DEBUG=1`, and turns every failure into one line: a user's mistake
(a `ValueError` with a message, a missing or unwritable path) as it is; anything else with
its type and a hint that `DETSEG_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import select
import sys
import traceback

from detseg.cli.arguments import CommandParser, finish_parsers

COMMAND_MODULES = (
    "detseg.cli.data_commands",
    "detseg.cli.demo_command",
    "detseg.cli.evaluate_command",
    "detseg.cli.serve_command",
    "detseg.cli.predict_command",
    "detseg.cli.train_command",
    "detseg.cli.export_command",
    "detseg.cli.tune_command",
    "detseg.cli.explain_command",
)
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left
DEBUG_HINT = "(set DETSEG_DEBUG=1 to see the traceback)"
# Plain words for the path errors a user causes; the path is named in front.
PATH_ERROR_WORDS = {
    FileExistsError: "already exists",
    IsADirectoryError: "is a folder, where a file is needed",
    NotADirectoryError: "is not a folder (a part of the path is a file)",
    FileNotFoundError: "no such file or folder",
    PermissionError: "permission denied",
}
# `detseg.core.atomic_files` stages writes in `.<name>.<random>.tmp`: the user's name is <name>.
STAGING_NAME = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="detseg", description="Object detection and segmentation on Keras/TensorFlow.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    finish_parsers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # imports no TensorFlow: bad arguments answer at once
    except SystemExit as done:  # --help, or an argument error already printed
        return _flushed(done.code if isinstance(done.code, int) else EXIT_ERROR)
    debug = bool(os.environ.get("DETSEG_DEBUG"))
    stderr_filter = None
    if not (debug or args.verbose):
        from detseg.cli.tensorflow_noise import quiet_tensorflow

        stderr_filter = quiet_tensorflow()
    try:
        return _flushed(int(args.func(args) or 0))
    except KeyboardInterrupt:
        print("detseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as error:
        if _stdout_reader_gone():
            _silence_stdout()  # `detseg data stats --json | head -1`: the reader had enough
            return EXIT_BROKEN_PIPE
        return _report(error, debug)
    except Exception as error:  # the user gets one line; DETSEG_DEBUG=1 shows the traceback
        return _report(error, debug)
    finally:
        if stderr_filter is not None:
            stderr_filter.stop()


def _flushed(code: int) -> int:
    """`code`, once stdout is flushed: a closed pipe shows here, not at interpreter exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _report(error: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"detseg: error: {_one_line(error)}", file=sys.stderr)
    if not debug and not _is_user_error(error):
        print(DEBUG_HINT, file=sys.stderr)
    return EXIT_ERROR


def _one_line(error: BaseException) -> str:
    """The error as the user should read it.

    A `DatasetError` raised inside a tf.data `numpy_function` reaches us wrapped in a
    multi-line TensorFlow error: the line carrying the original message is what matters.
    An operating system's path error becomes `PATH: what is wrong` (no `[Errno 17]`).
    """
    text = str(error)
    for line in text.splitlines():
        if "DatasetError: " in line:
            return line.split("DatasetError: ", 1)[1].strip()
    if isinstance(error, OSError) and error.errno is not None:
        return _path_error_line(error)
    return text if _is_user_error(error) else f"{type(error).__name__}: {text}"


def _path_error_line(error: OSError) -> str:
    """`out/a.json: already exists`; for a two-path call (rename) the target, the user's path."""
    words = next((w for kind, w in PATH_ERROR_WORDS.items() if isinstance(error, kind)), None)
    words = words or error.strerror or errno.errorcode.get(error.errno, "error").lower()
    path = error.filename2 if error.filename2 is not None else error.filename
    if path is None:
        return words
    return f"{_user_path(os.fsdecode(path))}: {words}"


def _user_path(path: str) -> str:
    """`path` without a staging folder of the atomic writer: `out/.a.json.x1y2.tmp/a.json` ->
    `out/a.json`; `out/.imgs.x1y2.tmp` -> `out/imgs`."""
    parts = path.split(os.sep)
    for index, part in enumerate(parts):
        match = STAGING_NAME.match(part)
        if match:
            return os.sep.join([*parts[:index], match.group("name")])
    return path


def _is_user_error(error: BaseException) -> bool:
    """Errors raised on purpose for bad input, and path errors: the message says what is wrong."""
    if isinstance(error, tuple(PATH_ERROR_WORDS)):
        return True
    return isinstance(error, ValueError) and bool(str(error).strip())


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (not a broken socket elsewhere)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: assume so
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
