"""Kinds of JSON values, for validation messages that say what was found."""

from __future__ import annotations

import json
from typing import Any

# Names of JSON value kinds for messages; bool before int because True is an int.
JSON_KINDS = ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
              ((int, float), "a number"))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    return "null" if value is None else next(name for kind, name in JSON_KINDS if isinstance(value, kind))


def describe(value: Any, limit: int = 60) -> str:
    """`a string "12"`: the JSON kind and a short rendering of a bad value."""
    text = json.dumps(value)  # values parsed from JSON always serialize (NaN as NaN)
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return "null" if value is None else f"{json_type(value)} {text}"
