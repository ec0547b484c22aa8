"""A finished run directory's final model, with what predicting and evaluating it need.

    run = load_run_model("runs/shapes")
    predictions = model_predictions(run.model, dataset, run.task, run.image_size)

A run directory holds `config.yaml` (the resolved config), `label_map.json` and
`model.keras`. Loading it needs the config loader and the family registry (importing
`training.families` registers every family's Keras classes for deserialization), so
this module sits above both; `training.predictions` below them only runs models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from detseg.data.coco import LabelMap
from detseg.training.config import load_config
from detseg.training.families import FAMILIES

RUN_FILES = ("config.yaml", "label_map.json", "model.keras")


class RunModelError(ValueError):
    """A folder is not a finished run directory; the message names what is missing."""


@dataclass(frozen=True)
class RunModel:
    """A run directory's final model with what evaluating it needs."""

    model: keras.Model
    task: str
    image_size: int
    label_map: LabelMap
    batch_size: int


def load_run_model(run_dir: str | os.PathLike) -> RunModel:
    """Load `run_dir/model.keras` with its config (family, image size) and label map."""
    root = Path(run_dir)
    for name in RUN_FILES:
        if not (root / name).is_file():
            raise RunModelError(f"{root}: not a finished run directory ({name} is missing)")
    config = load_config(root / "config.yaml")
    try:
        label_map = LabelMap.from_dict(json.loads((root / "label_map.json").read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise RunModelError(f"{root / 'label_map.json'}: unreadable label map ({error})") from None
    model = keras.saving.load_model(root / "model.keras", compile=False)
    return RunModel(model, FAMILIES[config.model.family].task, config.model.image_size, label_map,
                    config.stage2.batch_size)
