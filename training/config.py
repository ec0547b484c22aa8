"""Loading a training config: a YAML file or a packaged name, `key=value` overrides, checked.

    config = load_config("configs/clsloc_synthetic.yaml", ["stage1.epochs=3", "model.backbone=tiny"])
    config = load_config("smoke/yolo")   # a config that ships with detseg, found by name

The schema (the dataclasses, their value checks) is `training.config_schema`, which knows
no family; this module sits above the family registry (`training.families.FAMILIES`) and
checks `model.head` against the chosen family's head config dataclass. The schema's names
are re-exported here, so `from detseg.training.config import TrainConfig` keeps working.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from detseg.training.config_schema import (STRATEGIES, UNFREEZE_ALL, DataConfig, EarlyStoppingConfig,
                                           EvaluationConfig, ModelConfig, OptimizerConfig, PretrainConfig,
                                           ScheduleConfig, Stage1Config, Stage2Config, SyntheticDataConfig,
                                           TrainConfig, config_fingerprint, config_to_yaml, parse_config,
                                           with_strategy)
from detseg.training.dataclass_yaml import ConfigError, apply_overrides, parse_overrides, read_yaml_mapping
from detseg.training.families import FAMILIES

__all__ = ["STRATEGIES", "UNFREEZE_ALL", "PACKAGED_CONFIGS", "HEAD_SCHEMAS", "ConfigError", "DataConfig",
           "EarlyStoppingConfig", "EvaluationConfig", "ModelConfig", "OptimizerConfig", "PretrainConfig",
           "ScheduleConfig", "Stage1Config", "Stage2Config", "SyntheticDataConfig", "TrainConfig",
           "config_fingerprint", "config_from_mapping", "config_to_yaml", "load_config",
           "packaged_config_names", "resolve_config_path", "with_strategy"]

PACKAGED_CONFIGS = "detseg.configs"  # the YAML configs installed with the package
HEAD_SCHEMAS: dict[str, type] = {name: family.head_config for name, family in FAMILIES.items()}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config, apply `key=value` overrides, check every key and type.

    `path` is a YAML file, or the name of a config that ships with detseg
    (`yolo_synthetic`, `smoke/yolo`: see `packaged_config_names()`).
    """
    path = resolve_config_path(path)
    raw = apply_overrides(read_yaml_mapping(path), parse_overrides(list(overrides)))
    try:
        return config_from_mapping(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_from_mapping(raw: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from nested dicts; `model.head` is checked against its family's schema."""
    return parse_config(raw, HEAD_SCHEMAS)


def packaged_config_names() -> list[str]:
    """Names of the configs that ship inside the package (`smoke/...` for the tiny ones)."""
    root = resources.files(PACKAGED_CONFIGS)
    names = [entry.name[:-len(".yaml")] for entry in root.iterdir() if entry.name.endswith(".yaml")]
    names += [f"smoke/{entry.name[:-len('.yaml')]}" for entry in (root / "smoke").iterdir()
              if entry.name.endswith(".yaml")]
    return sorted(names)


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path as given when it exists; else a bare name of a packaged config.

    `yolo_synthetic` and `smoke/yolo` name `detseg/configs/yolo_synthetic.yaml` and
    `detseg/configs/smoke/yolo.yaml` (installed package data). A name that is neither
    is an error that lists the packaged names.
    """
    candidate = Path(path)
    if candidate.exists() or candidate.suffix in (".yaml", ".yml"):
        return candidate
    name = str(path).replace("\\", "/")
    packaged = resources.files(PACKAGED_CONFIGS).joinpath(*f"{name}.yaml".split("/"))
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"{path}: no such config file, and no packaged config of that name "
                      f"(packaged: {', '.join(packaged_config_names())})")
