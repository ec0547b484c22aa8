"""How every `detseg` command reads its arguments: one parser class, one help style, checks.

- `CommandParser`: the parser class of `detseg` and of every sub-command (argparse gives a
  sub-parser its parent's class). A bad argument is one line, `detseg predict: error:
  argument --model: ...`, then where to find the usage (no usage dump).
- `DefaultsShownFormatter`: every option's help ends with its default, unless the help
  already says it or there is none worth showing (None, False, an empty list).
- `finish_parsers(parser)`: run once on the whole tree; every long option answers to both
  spellings, `--model-name` and `--model_name` (help shows the dashed one), and every
  sub-command takes the global `--verbose`.
- Argument types (`existing_file`, `run_directory`, `saved_model_path`, `int_at_least`, ...)
  check paths and numbers while parsing, so a bad argument is answered before any command
  imports TensorFlow.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator

VERBOSE_HELP = "show TensorFlow's own log lines and warnings (also: DETSEG_DEBUG=1)"


class DefaultsShownFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help where X says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text.lower() or not shows_default(action):
            return help_text
        return f"{help_text} (default: %(default)s)"


def shows_default(action: argparse.Action) -> bool:
    """Whether `action`'s default is worth printing: not None/False/empty, not a flag's."""
    if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
        return False
    if isinstance(action, (argparse._StoreConstAction, argparse._HelpAction, argparse._VersionAction)):
        return False  # store_true / store_false / help: the flag's presence is the value
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class CommandParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with detseg's help style and one-line errors."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsShownFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nTry '{self.prog} --help' for the usage.\n")

    def _get_option_tuples(self, option_string: str):
        # An abbreviation (`--max-b`) matches both spellings of one option: that is one match.
        seen, unique = set(), []
        for option_tuple in super()._get_option_tuples(option_string):
            if id(option_tuple[0]) not in seen:
                seen.add(id(option_tuple[0]))
                unique.append(option_tuple)
        return unique


def finish_parsers(root: argparse.ArgumentParser) -> None:
    """Both spellings of every long option, the defaults formatter and `--verbose`, everywhere."""
    root.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    for parser in iter_parsers(root):
        parser.formatter_class = DefaultsShownFormatter
        accept_both_spellings(parser)
        if parser is not root and "--verbose" not in parser._option_string_actions:
            # SUPPRESS: a sub-command's absent flag must not reset `detseg --verbose CMD`.
            parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def iter_parsers(root: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`root` and every sub-parser below it, each once."""
    pending, seen = [root], set()
    while pending:
        parser = pending.pop(0)
        if id(parser) in seen:
            continue
        seen.add(id(parser))
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """`--a_b` and `--a-b` name the same option; the dashed one is the one shown."""
    for action in parser._actions:
        if not action.option_strings:
            continue
        shown = []
        for option in action.option_strings:
            spelling = dashed(option)
            if spelling not in shown:
                shown.append(spelling)
            for alias in {spelling, underscored(option)}:
                owner = parser._option_string_actions.setdefault(alias, action)
                if owner is not action:
                    raise ValueError(f"{parser.prog}: {option} and {owner.option_strings[0]} are one option "
                                     f"spelt two ways; rename one")
        action.option_strings = shown


def dashed(option: str) -> str:
    return "--" + option[2:].replace("_", "-") if option.startswith("--") else option


def underscored(option: str) -> str:
    return "--" + option[2:].replace("-", "_") if option.startswith("--") else option


# --- argument types: each returns the value or raises ArgumentTypeError with the reason ---

def existing_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def existing_path(text: str) -> Path:
    """A file or a folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def output_folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but must not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; give a folder")
    return path


def run_directory(text: str) -> Path:
    """A finished run directory: config.yaml, label_map.json and model.keras present."""
    from detseg.training.run_directory import RunDirectory  # the run's file names (no TensorFlow)

    path = existing_folder(text)
    run = RunDirectory(path)
    for required in (run.config_path, run.label_map_path, run.model_path):
        if not required.is_file():
            raise argparse.ArgumentTypeError(f"{text}: not a finished run directory ({required.name} is missing)")
    return path


def saved_model_path(text: str) -> Path:
    """A SavedModel version folder, or a base path whose numbered folders hold one.

    A quick look only (`serving.image_predictions.saved_model_version_dir` decides which
    version loads); it lets a wrong path fail before TensorFlow is imported.
    """
    path = existing_folder(text)
    if (path / "saved_model.pb").is_file():
        return path
    if any(child.name.isdigit() and (child / "saved_model.pb").is_file() for child in path.iterdir()):
        return path
    raise argparse.ArgumentTypeError(f"{text}: not a SavedModel (no saved_model.pb) nor a base path with "
                                     f"numbered version folders")


def server_address(text: str) -> str:
    """`http://host:port`, `https://...`, `grpc://host:port` or `host:port` (gRPC)."""
    scheme, _, rest = text.rpartition("://")
    if scheme not in ("", "http", "https", "grpc") or ":" not in rest.split("/", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a server address: give http://HOST:PORT (REST) "
                                         f"or grpc://HOST:PORT")
    return text


def int_at_least(minimum: int) -> Callable[[str], int]:
    return _checked_number(int, lambda v: v >= minimum, f"at least {minimum}")


def int_between(low: int, high: int) -> Callable[[str], int]:
    return _checked_number(int, lambda v: low <= v <= high, f"between {low} and {high}")


def float_between(low: float, high: float) -> Callable[[str], float]:
    return _checked_number(float, lambda v: low <= v <= high, f"between {low:g} and {high:g}")


def float_above(minimum: float) -> Callable[[str], float]:
    """A number greater than `minimum` (strictly)."""
    return _checked_number(float, lambda v: v > minimum, f"greater than {minimum:g}")


def float_at_least(minimum: float) -> Callable[[str], float]:
    return _checked_number(float, lambda v: v >= minimum, f"at least {minimum:g}")


def _checked_number(kind: type, accepts: Callable, wanted: str) -> Callable[[str], int | float]:
    """An argparse type: `kind(text)`, refused unless `accepts(value)` ("must be <wanted>, got ...")."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str):
        value = _number(text, kind, what)
        if not accepts(value):
            shown = value if kind is int else f"{value:g}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {shown}")
        return value
    return parse


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and value != value:  # NaN compares false with every bound
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value
