"""Where a model's predictions come from, for evaluation: a run directory (the Keras model
in memory, through the eval pipeline), a SavedModel or a served model (`serving_default` on
the encoded image files). Loads TensorFlow; `detseg.workflows.evaluate` imports it only when
a model is evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from detseg.core.contract import CLASSIFICATION_LOCALIZATION
from detseg.data.coco import CocoDataset
from detseg.data.errors import DatasetError
from detseg.serving.image_predictions import (SavedModelImages, ServedModelImages, image_predictions,
                                              saved_model_version_dir, task_of_outputs)
from detseg.training.predictions import eval_targets, model_predictions
from detseg.training.run_model import RUN_FILES, load_run_model


class NotAModelError(ValueError):
    """A path that is neither a run directory nor a SavedModel."""


@dataclass
class ModelSource:
    """Where a model's predictions come from: its task, the per-image predictions, the truths."""

    task: str
    predictions: Iterable
    truths: Mapping | None
    description: str


def open_model_source(model: str | os.PathLike | None, dataset: CocoDataset, *, server: str | None = None,
                      model_name: str | None = None, version: int | None = None, batch_size: int,
                      annotations: str | os.PathLike | None = None) -> ModelSource:
    """A run directory, a SavedModel or a served model, ready to predict on `dataset`'s images."""
    if server is not None:
        return exported_source(ServedModelImages(server, model_name, version), dataset, batch_size)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "config.yaml").is_file() or (path / "model.keras").is_file():
        return run_directory_source(path, dataset, batch_size, annotations)
    try:
        saved_model_version_dir(path)
    except ValueError:
        raise NotAModelError(
            f"{path}: neither a run directory ({', '.join(RUN_FILES)}) nor a SavedModel "
            f"(saved_model.pb, or numbered version folders holding one)") from None
    return exported_source(SavedModelImages(path), dataset, batch_size)


def run_directory_source(path: Path, dataset: CocoDataset, batch_size: int,
                         annotations: str | os.PathLike | None = None) -> ModelSource:
    """A run directory's final model, in memory through the eval pipeline."""
    run = load_run_model(path)
    if (run.label_map.coco_ids, run.label_map.names) != (dataset.label_map.coco_ids, dataset.label_map.names):
        raise DatasetError(f"{path / 'label_map.json'}: the model's classes {list(run.label_map.names)} "
                           f"(COCO ids {list(run.label_map.coco_ids)}) are not those of "
                           f"{annotations or 'the dataset'} {list(dataset.label_map.names)} "
                           f"(ids {list(dataset.label_map.coco_ids)})")
    predictions = model_predictions(run.model, dataset, run.task, run.image_size, batch_size)
    return ModelSource(run.task, predictions, eval_targets(dataset, run.task), f"run directory {path}")


def exported_source(predict: SavedModelImages | ServedModelImages, dataset: CocoDataset,
                    batch_size: int) -> ModelSource:
    """An exported model's `serving_default` on the dataset's encoded image files."""
    task = task_of_outputs(predict.output_names)
    truths = eval_targets(dataset, task)
    # cls+loc scores images with an object only, as its pipeline does (truths lists them).
    images = [(image.id, dataset.image_path(image)) for image in dataset.images
              if task != CLASSIFICATION_LOCALIZATION or image.id in truths]
    return ModelSource(task, image_predictions(predict, images, batch_size), truths, predict.description)
