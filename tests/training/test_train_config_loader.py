"""The YAML -> frozen dataclass loader: overrides, unknown keys, types, round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from detseg.training.dataclass_yaml import (ConfigError, apply_overrides, from_mapping, parse_overrides,
                                            read_yaml_mapping, to_mapping)


@dataclass(frozen=True)
class Inner:
    epochs: int = 2
    lr: float = 0.1
    unfreeze: int | Literal["all"] = 1
    cache: str | None = None


@dataclass(frozen=True)
class Outer:
    name: str
    kind: Literal["a", "b"] = "a"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    free: object = None


def test_defaults_and_nested_values():
    config = from_mapping(Outer, {"name": "x", "inner": {"epochs": 5, "unfreeze": "all"}})
    assert config == Outer("x", inner=Inner(epochs=5, unfreeze="all"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "y"


def test_overrides_are_yaml_scalars_on_dotted_keys():
    raw = apply_overrides({"name": "x", "inner": {"epochs": 5}},
                          parse_overrides(["inner.lr=1e-3", "flag=true", "inner.cache=null",
                                           "maybe.epochs=7", "sizes=[3, 4]"]))
    config = from_mapping(Outer, raw)
    assert config.inner == Inner(epochs=5, lr=0.001, cache=None)
    assert config.flag is True and config.sizes == (3, 4) and config.maybe == Inner(epochs=7)


def test_unknown_key_names_it_and_lists_the_valid_keys():
    with pytest.raises(ConfigError) as error:
        from_mapping(Outer, {"name": "x", "inner": {"epoch": 3}})
    message = str(error.value)
    assert "'inner.epoch'" in message
    assert "cache, epochs, lr, unfreeze" in message


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"'nmae'.*top level: flag, free, inner, kind, maybe, name, sizes"):
        from_mapping(Outer, {"nmae": "x"})


def test_unknown_key_inside_an_optional_section_is_reported_as_such():
    with pytest.raises(ConfigError, match=r"'maybe.epoks'"):
        from_mapping(Outer, {"name": "x", "maybe": {"epoks": 1}})


@pytest.mark.parametrize("raw, key", [
    ({"name": "x", "inner": {"epochs": "three"}}, "inner.epochs"),
    ({"name": "x", "inner": {"epochs": 2.5}}, "inner.epochs"),
    ({"name": "x", "inner": {"epochs": True}}, "inner.epochs"),
    ({"name": "x", "inner": {"lr": "fast"}}, "inner.lr"),
    ({"name": "x", "flag": "yes please"}, "flag"),
    ({"name": "x", "kind": "c"}, "kind"),
    ({"name": "x", "inner": {"unfreeze": "some"}}, "inner.unfreeze"),
    ({"name": "x", "inner": 3}, "inner"),
    ({"name": "x", "sizes": [1, "two"]}, "sizes[1]"),
    ({"name": ["x"]}, "name"),
])
def test_wrong_types_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=f"'{key}'".replace("[", r"\[").replace("]", r"\]")):
        from_mapping(Outer, raw)


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required config key 'name'"):
        from_mapping(Outer, {})


def test_field_types_choose_a_schema_at_load_time():
    config = from_mapping(Outer, {"name": "x", "free": {"epochs": 4}}, field_types={"free": Inner})
    assert config.free == Inner(epochs=4)
    assert from_mapping(Outer, {"name": "x"}, field_types={"free": Inner}).free == Inner()
    with pytest.raises(ConfigError, match="'free.bogus'"):
        from_mapping(Outer, {"name": "x", "free": {"bogus": 1}}, field_types={"free": Inner})


def test_round_trip_through_yaml():
    config = from_mapping(Outer, {"name": "x", "sizes": [5], "maybe": {"unfreeze": "all"}})
    again = from_mapping(Outer, yaml.safe_load(yaml.safe_dump(to_mapping(config))))
    assert again == config


@pytest.mark.parametrize("item", ["novalue", "=3", "a.b"])
def test_malformed_override(item):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([item])


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="'name' is a value"):
        apply_overrides({"name": "x"}, [("name.sub", 1)])


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        read_yaml_mapping(bad)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        read_yaml_mapping(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml_mapping(tmp_path / "list.yaml")
