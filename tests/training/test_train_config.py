"""The training config: the shipped YAML files, family head schemas, overrides, errors."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from detseg.pipelines.augment import AugmentConfig
from detseg.training.clsloc_family import ClsLocHeadConfig
from detseg.training.config import (HEAD_SCHEMAS, ConfigError, TrainConfig, config_fingerprint, config_to_yaml,
                                    load_config, packaged_config_names, with_strategy)
from detseg.training.config_schema import parse_config
from detseg.training.families import FAMILIES

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


MINIMAL = "name: t\ndata:\n  synthetic: {num_images: 10}\n"


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    again = load_config(write(tmp_path, config_to_yaml(config)))
    assert again == config


def test_smoke_config_is_small():
    config = load_config(SMOKE)
    assert config.model.backbone == "tiny" and config.model.image_size <= 128
    assert config.data.synthetic is not None and config.data.synthetic.num_images <= 64


def test_head_section_uses_the_family_schema(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "model:\n  head: {hidden_units: 8, box_loss: giou}\n"))
    assert config.model.head == ClsLocHeadConfig(hidden_units=8, box_loss="giou")
    assert load_config(write(tmp_path, MINIMAL)).model.head == ClsLocHeadConfig()


def test_augment_section_is_the_pipeline_config(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "augment: {crop: 0.0, scale_range: [0.9, 1.1]}\n"))
    assert config.augment == AugmentConfig(crop=0.0, scale_range=(0.9, 1.1))


def test_overrides_reach_nested_sections():
    config = load_config(SMOKE, ["stage1.epochs=7", "stage2.unfreeze=all", "model.head.dropout=0.5",
                                 "schedule.kind=step", "stage1.lr=1e-2"])
    assert config.stage1.epochs == 7 and config.stage1.lr == 0.01
    assert config.stage2.unfreeze == "all"
    assert config.model.head.dropout == 0.5 and config.schedule.kind == "step"


@pytest.mark.parametrize("override, named, listed", [
    ("stage1.epoch=3", "'stage1.epoch'", "batch_size, cache_dir, epochs, lr"),
    ("model.head.hiden_units=3", "'model.head.hiden_units'", "box_channels"),
    ("trian.epochs=3", "'trian'", "augment, data, deterministic"),
])
def test_unknown_keys_are_named_with_the_valid_ones(override, named, listed):
    with pytest.raises(ConfigError) as error:
        load_config(SMOKE, [override])
    assert named in str(error.value) and listed in str(error.value)
    assert "clsloc.yaml" in str(error.value)


@pytest.mark.parametrize("override, key", [
    ("stage1.epochs=three", "stage1.epochs"),
    ("stage2.unfreeze=most", "stage2.unfreeze"),
    ("schedule.kind=linear", "schedule.kind"),
    ("model.image_size=1.5", "model.image_size"),
    ("deterministic=maybe", "deterministic"),
    ("model.head.box_loss=l2", "model.head.box_loss"),
])
def test_wrong_types_are_named(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(SMOKE, [override])


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ConfigError) as error:
        load_config(SMOKE, ["model.family=yolo9000"])
    assert f"'model.family' must be one of {sorted(FAMILIES)}, got 'yolo9000'" in str(error.value)


def test_pipeline_config_checks_surface_as_config_errors():
    with pytest.raises(ConfigError, match="augment.*horizontal_flip"):
        load_config(SMOKE, ["augment.horizontal_flip=2.0"])


@pytest.mark.parametrize("overrides, message", [
    (["data.train=a.json"], "exclusive"),
    (["data.synthetic=null"], "needs both 'train' and 'val'"),
    (["stage1.batch_size=0"], "'stage1.batch_size' must be positive"),
    (["stage1.epochs=0", "stage2.epochs=0"], "nothing to train"),
    (["name=a/b"], "plain folder name"),
])
def test_inconsistent_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, overrides)


def test_fingerprint_follows_what_is_computed_not_how_it_is_distributed():
    config = load_config(SMOKE)
    assert config_fingerprint(with_strategy(config, "mirrored")) == config_fingerprint(config)
    assert config_fingerprint(replace(config, seed=1)) != config_fingerprint(config)
    with pytest.raises(ConfigError, match="strategy"):
        with_strategy(config, "horovod")


def test_packaged_config_by_name_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name is found in the package
    config = load_config("smoke/clsloc", [f"runs_dir={tmp_path}"])
    assert config == load_config(SMOKE, [f"runs_dir={tmp_path}"])
    assert load_config("yolo_synthetic").name == "yolo_synthetic"
    assert {"smoke/clsloc", "smoke/yolo", "yolo_synthetic"} <= set(packaged_config_names())
    with pytest.raises(ConfigError, match=r"no_such_config: no such config file.*smoke/yolo"):
        load_config("no_such_config")


def test_schema_takes_the_head_schemas_it_is_given():
    raw = yaml.safe_load(SMOKE.read_text())
    config = parse_config(raw, {"clsloc": ClsLocHeadConfig})
    assert config == load_config(SMOKE) and config.model.head == ClsLocHeadConfig(**raw["model"]["head"])
    with pytest.raises(ConfigError, match=r"must be one of \['clsloc'\], got 'yolo'"):
        parse_config({**raw, "model": {**raw["model"], "family": "yolo"}}, {"clsloc": ClsLocHeadConfig})


def test_the_registry_gives_the_head_schemas_and_the_schema_module_imports_no_family():
    assert HEAD_SCHEMAS == {name: family.head_config for name, family in FAMILIES.items()}
    source = (REPO / "training" / "config_schema.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert not any(name and "famil" in name for name in imported), imported
