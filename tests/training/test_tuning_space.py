"""Search spaces: every fault is one error naming the key, before any trial runs."""

from __future__ import annotations

import math

import pytest

from detseg.training.dataclass_yaml import ConfigError
from detseg.training.search_space import load_space, parse_space, refined


@pytest.mark.parametrize("raw, words", [
    ({}, "no parameter"),
    (None, "no parameter"),
    ({"stage2.lr": {"log_uniform": [1e-2, 1e-5]}}, "'stage2.lr': log_uniform low 0.01 must be below high"),
    ({"stage2.lr": {"uniform": [0.5, 0.5]}}, "'stage2.lr': uniform low 0.5 must be below high 0.5"),
    ({"stage2.lr": {"log_uniform": [0, 1e-1]}}, "'stage2.lr': log_uniform range [0, 0.1] must be above 0"),
    ({"stage2.lr": {"log_uniform": [-1, 1]}}, "'stage2.lr': log_uniform range [-1, 1] must be above 0"),
    ({"stage2.lr": {"normal": [0, 1]}}, "'stage2.lr' must be one distribution"),
    ({"stage2.lr": [1e-3, 1e-2]}, "'stage2.lr' must be one distribution"),
    ({"stage2.batch_size": {"int": [8.5, 32]}}, "'stage2.batch_size': int needs integer bounds"),
    ({"optimizer.kind": {"choice": []}}, "'optimizer.kind': choice needs a non-empty list"),
    ({"stage2.lr": {"uniform": ["a", 1]}}, "'stage2.lr': uniform bounds must be finite numbers"),
])
def test_space_structure_errors_name_the_key(raw, words):
    with pytest.raises(ConfigError) as error:
        parse_space(raw, "space.yaml")
    assert words in str(error.value)
    assert str(error.value).startswith("space.yaml")


def test_space_file_reads_yaml_numbers_without_a_dot(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("stage2.lr: {log_uniform: [1e-5, 1e-1]}\noptimizer.kind: {choice: [adam, sgd]}\n")
    space = load_space(path)
    assert [(d.key, d.kind, d.low, d.high) for d in space.distributions][0] == ("stage2.lr", "log_uniform", 1e-5, 0.1)
    assert space.distributions[1].choices == ("adam", "sgd")


def test_refined_narrows_log_ranges_in_log_space():
    space = parse_space({"stage1.lr": {"log_uniform": [1e-6, 10]}, "stage2.batch_size": {"int": [4, 64]},
                         "optimizer.kind": {"choice": ["adam", "sgd", "rmsprop"]}})
    narrowed = refined(space, [{"stage1.lr": 1e-3, "stage2.batch_size": 16, "optimizer.kind": "sgd"},
                               {"stage1.lr": 1e-2, "stage2.batch_size": 20, "optimizer.kind": "adam"}])
    lr, batch, kind = narrowed.distributions
    # Span 1e-3..1e-2 (one decade) widened by a quarter of the old 7 decades on each side: centred in log space.
    assert math.isclose(math.log10(lr.low), -3 - 7 / 8) and math.isclose(math.log10(lr.high), -2 + 7 / 8)
    assert 4 <= batch.low < 16 and 20 < batch.high <= 64 and batch.high - batch.low < 60
    assert kind.choices == ("adam", "sgd")


@pytest.fixture(scope="module")
def smoke_base():
    from detseg.training.config import config_from_mapping, load_config
    from detseg.training.dataclass_yaml import to_mapping

    return to_mapping(load_config("smoke/clsloc")), config_from_mapping


@pytest.mark.parametrize("raw, words", [
    ({"stage2.learning_rate": {"log_uniform": [1e-5, 1e-1]}}, "unknown config key 'stage2.learning_rate'"),
    ({"optimizer.kind": {"choice": ["adam", "lbfgs"]}}, "'optimizer.kind' (choice ['adam', 'lbfgs']) does not fit "
                                                        "the config at 'lbfgs'"),
    ({"stage2.batch_size": {"uniform": [8, 32]}}, "config key 'stage2.batch_size' must be an integer"),
    ({"model.head.hidden_units": {"int": [0, 8]}, "stage2.lr": {"log_uniform": [1e-5, 1e-1]}}, None),
    ({"ema.momentum": {"uniform": [0.5, 1.0]}}, "ema.momentum must be in [0, 1)"),
])
def test_space_keys_checked_against_the_config_schema(smoke_base, raw, words):
    from detseg.training.search_space import check_against_config

    base, parse = smoke_base
    space = parse_space(raw, "space.yaml")
    if words is None:
        check_against_config(space, base, parse)  # a head key of the family's schema is searchable
        return
    with pytest.raises(ConfigError) as error:
        check_against_config(space, base, parse)
    assert words in str(error.value) and str(error.value).startswith("space.yaml: '")
