"""A hyperparameter search space over config keys: parsing, checking, coarse-to-fine narrowing.

A space file (YAML) maps dotted config keys to one distribution each:

    stage2.lr:            {log_uniform: [1.0e-5, 1.0e-1]}   # the notes: learning rates on a log scale
    optimizer.weight_decay: {log_uniform: [1.0e-6, 1.0e-2]}
    augment.color_jitter: {uniform: [0.0, 1.0]}
    stage2.batch_size:    {int: [8, 32]}
    optimizer.kind:       {choice: [adam, sgd]}

`low < high` always; a `log_uniform` range is strictly positive. Whether each key exists
and takes the values is checked against the config schema by `check_against_config`,
before any trial runs. This module imports neither TensorFlow nor Optuna.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from detseg.training.dataclass_yaml import ConfigError, apply_overrides, read_yaml

KINDS = ("log_uniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Distribution:
    """One searched key: `kind` in KINDS; `low`/`high` for numbers, `choices` for `choice`."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    @property
    def is_log(self) -> bool:
        return self.kind == "log_uniform"

    def corners(self) -> list:
        """The values a config must accept for this key: both ends (floats unless `int`,
        as Optuna draws them), or every choice."""
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high] if self.kind == "int" else [float(self.low), float(self.high)]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.kind} {list(self.choices)}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys, in file order; `source` names the file in messages."""

    distributions: tuple[Distribution, ...]
    source: str = "search space"

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.distributions]


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a space file (structure and ranges; the keys: `check_against_config`)."""
    return parse_space(read_yaml(path, "search space file"), str(path))


def parse_space(raw: Any, source: str = "search space") -> SearchSpace:
    """A `SearchSpace` from `{key: {kind: args}}`; every fault is a `ConfigError` naming the key."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: the space has no parameter; give at least one "
                          f"'config.key: {{kind: ...}}' with kind one of {list(KINDS)}")
    return SearchSpace(tuple(_parse_entry(str(key), spec, source) for key, spec in raw.items()), source)


def _parse_entry(key: str, spec: Any, source: str) -> Distribution:
    where = f"{source}: '{key}'"
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where} must be one distribution, {{kind: ...}} with kind one of "
                          f"{list(KINDS)}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: choice needs a non-empty list of values, got {args!r}")
        if len({repr(a) for a in args}) != len(args):
            raise ConfigError(f"{where}: choice lists a value twice: {args!r}")
        return Distribution(key, kind, choices=tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{where}: {kind} needs [low, high], got {args!r}")
    low, high = (_number(a, where, kind) for a in args)
    if kind == "int" and not all(isinstance(a, int) for a in (low, high)):
        raise ConfigError(f"{where}: int needs integer bounds, got {args!r}")
    if low >= high:
        raise ConfigError(f"{where}: {kind} low {low:g} must be below high {high:g}")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform range [{low:g}, {high:g}] must be above 0 "
                          f"(a log scale cannot include 0 or negative values)")
    return Distribution(key, kind, low, high)


def _number(value: Any, where: str, kind: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {kind} bounds must be finite numbers, got {value!r}")
    return value


def check_against_config(space: SearchSpace, base: Mapping[str, Any],
                         parse: Callable[[dict], Any]) -> None:
    """Every key's every corner value applied to `base` (a config as nested dicts) must parse.

    `parse` is the config loader (`training.config.config_from_mapping`). An unknown key, a
    value of the wrong type, a choice the schema rejects: one `ConfigError` naming the key.
    """
    for distribution in space.distributions:
        for value in distribution.corners():
            try:
                parse(apply_overrides(base, [(distribution.key, value)]))
            except ConfigError as e:
                raise ConfigError(f"{space.source}: '{distribution.key}' ({distribution.describe()}) "
                                  f"does not fit the config at {value!r}: {e}") from None


def refined(space: SearchSpace, best_params: Sequence[Mapping[str, Any]], margin: float = 0.25) -> SearchSpace:
    """The coarse-to-fine second round: each numeric range narrowed around the best trials.

    `best_params`: the parameters of the best trials (at least one). A numeric range becomes
    the span of their values widened by `margin` of that span on both sides (at least
    `margin` / 2 of the old range), in log space for `log_uniform`, kept inside the old
    range; a `choice` keeps the values the best trials used.
    """
    if not best_params:
        raise ValueError("refining needs at least one finished trial")
    narrowed = []
    for d in space.distributions:
        values = [p[d.key] for p in best_params if d.key in p]
        if not values:
            narrowed.append(d)
        elif d.kind == "choice":
            narrowed.append(replace(d, choices=tuple(c for c in d.choices if c in values)))
        else:
            narrowed.append(_narrowed_range(d, values, margin))
    return SearchSpace(tuple(narrowed), f"{space.source} (refined)")


def _narrowed_range(d: Distribution, values: list, margin: float) -> Distribution:
    to_axis = math.log if d.is_log else float
    from_axis = math.exp if d.is_log else float
    low, high = to_axis(d.low), to_axis(d.high)
    lo, hi = to_axis(min(values)), to_axis(max(values))
    pad = max((hi - lo) * margin, (high - low) * margin / 2)
    new_low, new_high = from_axis(max(low, lo - pad)), from_axis(min(high, hi + pad))
    if d.kind == "int":
        new_low, new_high = math.floor(new_low), math.ceil(new_high)
        if new_low >= new_high:
            return d
    return replace(d, low=max(d.low, new_low), high=min(d.high, new_high))
