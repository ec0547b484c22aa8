"""The training config's schema: frozen dataclasses, every key and type checked.

Sections (see `configs/*.yaml` for annotated examples):
- `name`, `seed`, `deterministic`, `runs_dir`, `strategy` (default | mirrored | multiworker),
  `precision` (float32 | mixed_bfloat16 | mixed_float16: Keras mixed precision for the
  model's layers; losses, decoding, NMS, the exported signatures, BatchNorm statistics and
  optimizer state stay float32; mixed_float16 trains with loss scaling, for GPUs)
- `model`: `family` (a key of `training.families.FAMILIES`), `backbone`, `weights`
  (null | imagenet | path to a `.weights.h5`, e.g. one written by `detseg pretrain`),
  `image_size`, and `head`, whose keys are the family's own head config dataclass.
- `data`: COCO `train` / `val` JSON paths (+ optional `images` dir), or `synthetic`.
- `augment`: `pipelines.augment.AugmentConfig`, the pipeline's augmentation for stage 2
  (stage 1 trains on cached, un-augmented features: augmentation cannot apply to
  features computed once).
- `pretrain` (optional stage 0: the backbone learns on object crops of the train split,
  offline), `stage1` (bottleneck: frozen backbone, cached features), `stage2` (fine-tuning: the top
  `unfreeze` blocks, or `all`), `schedule` (learning rate per stage), `early_stopping`,
  `optimizer`, `ema` (averaged weights for evaluation, checkpoints and export).

This module knows no model family: `parse_config` takes the families' head schemas as an
argument, so the schema sits below the family registry. Reading YAML files, packaged
config names and the registry's schemas: `training.config` (`load_config`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from detseg.data.synthetic import MAX_SHAPES, MIN_SHAPE_SIZE
from detseg.pipelines.augment import AugmentConfig
from detseg.training.dataclass_yaml import ConfigError, from_mapping, to_mapping

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policy names
UNFREEZE_ALL = "all"


@dataclass(frozen=True)
class ModelConfig:
    family: str = "clsloc"
    backbone: str = "tiny"
    weights: str | None = None
    image_size: int = 128
    alpha: float = 1.0  # width multiplier (tiny, mobilenet_v2 only)
    head: object = None  # an instance of the family's head config dataclass (`parse_config`)


@dataclass(frozen=True)
class SyntheticDataConfig:
    """Generate (once) the synthetic shapes dataset, so smoke configs need no files."""

    num_images: int = 200
    image_size: int = 128
    seed: int = 0
    max_shapes: int = MAX_SHAPES  # most shapes per image; 1: single-object images
    min_shape_size: float = MIN_SHAPE_SIZE  # smallest shape diameter, a fraction of the image side
    dir: str | None = None  # default: <runs_dir>/synthetic/n<num_images>_s<image_size>_seed<seed>[_max<k>]


@dataclass(frozen=True)
class DataConfig:
    train: str | None = None
    val: str | None = None
    images: str | None = None
    synthetic: SyntheticDataConfig | None = None
    semantic_masks: str | None = None  # folder of semantic mask PNGs; None: semantic truth from annotations


@dataclass(frozen=True)
class PretrainConfig:
    """Stage 0, offline: with `epochs > 0` (and `model.weights: null`) the backbone first
    trains as a classifier on object crops of the train split (`detseg pretrain`), and the
    run starts from those weights (`runs/<name>/pretrain/backbone.weights.h5`)."""

    epochs: int = 0
    image_size: int = 64
    batch_size: int = 32
    lr: float = 1e-3


@dataclass(frozen=True)
class Stage1Config:
    """Bottleneck training: the frozen backbone runs once; the head trains on cached features."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    cache_dir: str | None = None  # default: <run dir>/feature_cache
    min_steps_per_epoch: int = 0  # small data: an epoch repeats the train set to at least this many steps


@dataclass(frozen=True)
class Stage2Config:
    """Fine-tuning from the stage-1 head: top `unfreeze` blocks (or `all`) train.

    `min_steps_per_epoch` (both stages): with a dozen images an epoch is one or two steps,
    so epoch counts, patience, warm-up and `eval.every` would all mean almost nothing. An
    epoch then passes over the train set several whole times, enough for this many steps
    (0: one pass, the usual epoch).

    `batchnorm: frozen` (default) keeps BatchNorm in inference mode with the backbone's
    statistics, right for ImageNet weights; `train` lets the unfrozen blocks' BatchNorm
    learn, right when those statistics never saw images like these (no weights, or a
    backbone pretrained on object crops by stage 0).
    """

    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 16
    unfreeze: int | Literal["all"] = 2
    batchnorm: Literal["frozen", "train"] = "frozen"
    min_steps_per_epoch: int = 0  # small data: an epoch repeats the train set to at least this many steps


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over one stage's steps; `warmup_epochs` ramps linearly up to the stage's lr."""

    kind: Literal["constant", "step", "exponential", "inverse_time", "cosine"] = "cosine"
    warmup_epochs: float = 0.0
    decay_epochs: float = 1.0  # step / exponential / inverse_time: the decay period
    decay_rate: float = 0.5
    min_lr_fraction: float = 0.0  # cosine: floor as a fraction of the stage lr


@dataclass(frozen=True)
class EvaluationConfig:
    """The task's real metric (COCO AP, mIoU, localization accuracy) on val while fine-tuning.

    `every`: evaluate after every N-th stage-2 epoch and the last (0 = off); the numbers
    (`val_coco_AP`, `val_mIoU`, ...) go to metrics.csv and TensorBoard.
    """

    every: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 5
    min_delta: float = 0.0


OPTIMIZER_KINDS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer of both stages (`training.transfer_stages.build_optimizer`).

    `kind`: sgd (with `momentum`, `nesterov`), adagrad, rmsprop, adam, adamw (with
    `weight_decay`, decoupled from the gradient); Keras' defaults otherwise. `clipnorm`: each gradient's
    norm is clipped to this value (null: no clipping).
    """

    kind: Literal["sgd", "adagrad", "rmsprop", "adam", "adamw"] = "adam"
    weight_decay: float = 0.0  # adamw only
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    clipnorm: float | None = None

    def __post_init__(self):
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"optimizer.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0.0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if self.clipnorm is not None and self.clipnorm <= 0.0:
            raise ValueError(f"optimizer.clipnorm must be positive or null, got {self.clipnorm}")


@dataclass(frozen=True)
class EmaConfig:
    """Polyak averaging: an exponential moving average of the trainable weights.

    With `enabled`, the optimizer keeps `average = momentum * average + (1 - momentum) *
    weights` after every step (Keras' `use_ema`); validation, the task metric, the best
    checkpoint, the final model and its export use the averaged weights, training goes on
    from the raw ones.
    """

    enabled: bool = False
    momentum: float = 0.99

    def __post_init__(self):
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"ema.momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class TrainConfig:
    name: str
    seed: int = 0
    deterministic: bool = True
    runs_dir: str = "runs"
    strategy: Literal["default", "mirrored", "multiworker"] = "default"
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    eval: EvaluationConfig = field(default_factory=EvaluationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def parse_config(raw: dict[str, Any], head_schemas: Mapping[str, type]) -> TrainConfig:
    """A `TrainConfig` from nested dicts, every key and type checked.

    `head_schemas` maps each known `model.family` to its head config dataclass; `model.head`
    is read as that family's dataclass. `training.config.config_from_mapping` passes the
    trainer's registry (`training.families.FAMILIES`).
    """
    model = raw.get("model") or {}
    family = model.get("family", ModelConfig.family) if isinstance(model, dict) else None
    if family not in head_schemas:
        raise ConfigError(f"config key 'model.family' must be one of {sorted(head_schemas)}, got {family!r}")
    config = from_mapping(TrainConfig, raw, field_types={"model.head": head_schemas[family]})
    _check_values(config)
    return config


def _check_values(config: TrainConfig) -> None:
    data = config.data
    if data.synthetic is not None and (data.train or data.val):
        raise ConfigError("data.synthetic and data.train/data.val are exclusive: choose one source")
    if data.synthetic is None and not (data.train and data.val):
        raise ConfigError("data needs both 'train' and 'val' COCO files, or a 'synthetic' section")
    positive = {"model.image_size": config.model.image_size,
                "stage1.batch_size": config.stage1.batch_size,
                "stage2.batch_size": config.stage2.batch_size}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {value}")
    for key, value in {"stage1.epochs": config.stage1.epochs, "stage2.epochs": config.stage2.epochs,
                       "early_stopping.patience": config.early_stopping.patience,
                       "stage1.min_steps_per_epoch": config.stage1.min_steps_per_epoch,
                       "stage2.min_steps_per_epoch": config.stage2.min_steps_per_epoch,
                       "eval.every": config.eval.every}.items():
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if isinstance(config.stage2.unfreeze, int) and config.stage2.unfreeze < 0:
        raise ConfigError(f"config key 'stage2.unfreeze' must be >= 0 or 'all', got {config.stage2.unfreeze}")
    if config.pretrain.epochs > 0 and config.model.weights is not None:
        raise ConfigError("pretrain.epochs > 0 pretrains the backbone itself: set model.weights to null, "
                          "or pretrain.epochs to 0 to start from model.weights")
    if config.stage1.epochs + config.stage2.epochs == 0:
        raise ConfigError("stage1.epochs and stage2.epochs are both 0: nothing to train")
    if "/" in config.name or config.name in ("", ".", ".."):
        raise ConfigError(f"config key 'name' must be a plain folder name, got {config.name!r}")


def with_strategy(config: TrainConfig, strategy: str | None) -> TrainConfig:
    """The config with `strategy` replaced (the `--strategy` flag wins over the file)."""
    if strategy is None:
        return config
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return replace(config, strategy=strategy)


def config_to_yaml(config: TrainConfig) -> str:
    """The resolved config as YAML; `load_config` of this text gives back an equal config."""
    return yaml.safe_dump(to_mapping(config), sort_keys=False)


def config_fingerprint(config: TrainConfig) -> str:
    """Hash of everything that decides what a run computes (not how it is distributed).

    A run directory is resumed only by a config with the same fingerprint. `precision:
    float32` (the default) is left out, so run directories made before the key existed
    still resume.
    """
    payload = to_mapping(replace(config, strategy="default"))
    if payload.get("precision") == "float32":
        del payload["precision"]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
