"""Plain YAML mappings <-> frozen dataclasses, with `key=value` overrides.

The one config mechanism of detseg: a YAML file is parsed into nested dicts, command-line
overrides (`train.epochs=3`, dotted keys, values parsed as YAML scalars) are applied to
those dicts, and the result is converted into frozen dataclasses. Every fault is a
`ConfigError` that names the dotted key; an unknown key also lists the valid keys at its
level, so a typo is fixed from the message alone.

Supported field types: bool, int, float, str, `X | None`, `Literal[...]`, `int | Literal[...]`,
`tuple[X, ...]`, nested dataclasses, and `object` (a free-form mapping or scalar, for
fields whose schema is chosen at load time through `field_types`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key at fault."""


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """`["a.b=3", "c=x"]` -> `[("a.b", 3), ("c", "x")]`; values are YAML scalars."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. stage1.epochs=3)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        parsed.append((key.strip(), value))
    return parsed


def apply_overrides(raw: Mapping[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of `raw` with each dotted key set; missing parents become mappings."""
    result = _deep_copy(raw)
    for dotted, value in overrides:
        node = result
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[:depth + 1])
                raise ConfigError(f"override {dotted}: '{where}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file (a BOM is fine); a missing file or bad YAML is a `ConfigError` naming it."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file whose top level is a mapping; errors name the file."""
    payload = read_yaml(path)
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return payload


def from_mapping(cls: type, raw: Any, where: str = "",
                 field_types: Mapping[str, type] | None = None) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types recursively.

    `where` is the dotted path of `raw` (for messages); `field_types` replaces the declared
    type of fields by dotted path (e.g. `{"model.head": ClsLocHeadConfig}`).
    """
    field_types = field_types or {}
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where or 'config'}' must be a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            level = f"in '{where}'" if where else "at the top level"
            raise ConfigError(f"unknown config key '{_join(where, str(key))}'; "
                              f"valid keys {level}: {', '.join(sorted(fields))}")
    values = {}
    for name, spec in fields.items():
        path = _join(where, name)
        if name in raw:
            values[name] = _convert(field_types.get(path, hints[name]), raw[name], path, field_types)
        elif _has_default(spec) and any(k == path or k.startswith(path + ".") for k in field_types):
            # A schema chosen at load time lies at or below this absent key: build the
            # defaults through it rather than use the declared placeholder default.
            values[name] = _convert(field_types.get(path, hints[name]), {}, path, field_types)
        elif not _has_default(spec):
            raise ConfigError(f"missing required config key '{path}'")
    try:
        return cls(**values)
    except ValueError as e:  # a dataclass's own __post_init__ check
        raise ConfigError(f"config section '{where or 'top level'}': {e}") from None


def to_mapping(instance: Any) -> Any:
    """Dataclasses -> plain dicts/lists/scalars, ready for `yaml.safe_dump`."""
    if dataclasses.is_dataclass(instance):
        return {f.name: to_mapping(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [to_mapping(v) for v in instance]
    if isinstance(instance, Mapping):
        return {k: to_mapping(v) for k, v in instance.items()}
    return instance


def _convert(kind: Any, value: Any, path: str, field_types: Mapping[str, type]) -> Any:
    if dataclasses.is_dataclass(kind):
        return from_mapping(kind, value, path, field_types)
    if kind is object or kind is Any:
        return _deep_copy(value) if isinstance(value, Mapping) else value
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(typing.get_args(kind), value, path, field_types)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"config key '{path}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}' must be a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_convert(item, v, f"{path}[{i}]", field_types) for i, v in enumerate(value))
    return _convert_scalar(kind, value, path)


def _convert_union(options: tuple, value: Any, path: str, field_types: Mapping[str, type]) -> Any:
    if value is None and type(None) in options:
        return None
    nested = [o for o in options if dataclasses.is_dataclass(o)]
    if nested and isinstance(value, Mapping):
        # Report the nested section's own fault (unknown key, bad type), not "must be X or Y".
        return from_mapping(nested[0], value, path, field_types)
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, value, path, field_types)
        except ConfigError:
            continue
    accepted = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"config key '{path}' must be {accepted}, got {value!r}")


def _convert_scalar(kind: type, value: Any, path: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept any numeric text.
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise TypeError(f"unsupported config field type {kind!r} at '{path}'")
    raise ConfigError(f"config key '{path}' must be {_type_name(kind)}, got {value!r}")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + str(list(typing.get_args(kind)))
    if kind is type(None):
        return "null"
    if dataclasses.is_dataclass(kind):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _has_default(spec: dataclasses.Field) -> bool:
    return spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
