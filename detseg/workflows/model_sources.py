"""Where a model's predictions come from, for evaluation: a run directory (the Keras model
in memory, through the eval pipeline), an ensemble of run directories (`load_ensemble_runs`:
one `models.ensemble.EnsembleModel` in memory, the model `detseg export --ensemble` exports),
a SavedModel or a served model (`serving_default` on the encoded image files). Loads
TensorFlow; `detseg.workflows.evaluate` imports it only when a model is evaluated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from detseg.core.contract import CLASSIFICATION_LOCALIZATION
from detseg.data.coco import CocoDataset, LabelMap
from detseg.data.errors import DatasetError
from detseg.serving.image_predictions import (SavedModelImages, ServedModelImages, image_predictions,
                                              saved_model_version_dir, task_of_outputs)
from detseg.training.predictions import eval_targets, model_predictions
from detseg.training.config import load_config
from detseg.training.run_model import RUN_FILES, RunModel, load_run_model


class NotAModelError(ValueError):
    """A path that is neither a run directory nor a SavedModel."""


class EnsembleRunsError(ValueError):
    """Runs that cannot form one ensemble (none, or differing family, classes or image size)."""


@dataclass
class ModelSource:
    """Where a model's predictions come from: its task, the per-image predictions, the truths."""

    task: str
    predictions: Iterable
    truths: Mapping | None
    description: str


def open_model_source(model: str | os.PathLike | None, dataset: CocoDataset, *, server: str | None = None,
                      model_name: str | None = None, version: int | None = None, batch_size: int,
                      annotations: str | os.PathLike | None = None,
                      ensemble: Sequence[str | os.PathLike] | None = None) -> ModelSource:
    """A run directory, an ensemble of run directories, a SavedModel or a served model, ready
    to predict on `dataset`'s images."""
    if ensemble is not None:
        paths = [Path(p) for p in ensemble]
        return run_model_source(load_ensemble_runs(paths), dataset, batch_size, annotations,
                                paths[0] / "label_map.json",
                                f"ensemble of {len(paths)} runs ({', '.join(str(p) for p in paths)})")
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
    return run_model_source(load_run_model(path), dataset, batch_size, annotations, path / "label_map.json",
                            f"run directory {path}")


def run_model_source(run: RunModel, dataset: CocoDataset, batch_size: int,
                     annotations: str | os.PathLike | None, label_map_file: Path, description: str) -> ModelSource:
    """A loaded run's model (or ensemble), in memory through the eval pipeline, once its
    classes (from `label_map_file`) are known to be the dataset's."""
    if (run.label_map.coco_ids, run.label_map.names) != (dataset.label_map.coco_ids, dataset.label_map.names):
        raise DatasetError(f"{label_map_file}: the model's classes {list(run.label_map.names)} "
                           f"(COCO ids {list(run.label_map.coco_ids)}) are not those of "
                           f"{annotations or 'the dataset'} {list(dataset.label_map.names)} "
                           f"(ids {list(dataset.label_map.coco_ids)})")
    predictions = model_predictions(run.model, dataset, run.task, run.image_size, batch_size)
    return ModelSource(run.task, predictions, eval_targets(dataset, run.task), description)


def exported_source(predict: SavedModelImages | ServedModelImages, dataset: CocoDataset,
                    batch_size: int) -> ModelSource:
    """An exported model's `serving_default` on the dataset's encoded image files."""
    task = task_of_outputs(predict.output_names)
    truths = eval_targets(dataset, task)
    # cls+loc scores images with an object only, as its pipeline does (truths lists them).
    images = [(image.id, dataset.image_path(image)) for image in dataset.images
              if task != CLASSIFICATION_LOCALIZATION or image.id in truths]
    return ModelSource(task, image_predictions(predict, images, batch_size), truths, predict.description)


def load_ensemble_runs(run_dirs: Sequence[str | os.PathLike],
                       weights: Sequence[float] | None = None) -> RunModel:
    """Finished runs of one family, image size and class list as ONE `RunModel` whose model
    is a `models.ensemble.EnsembleModel` of theirs (what `detseg export --ensemble` exports
    and `detseg evaluate --ensemble` evaluates). Raises `EnsembleRunsError` naming the first
    run and each run that differs from it, and how, before any model loads."""
    from detseg.models.ensemble import EnsembleModel

    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise EnsembleRunsError("an ensemble needs at least one run directory")
    identities = [_run_identity(path) for path in paths]
    differences = [f"{path} has {'; '.join(differs)}" for path, identity in zip(paths[1:], identities[1:])
                   if (differs := _run_differences(identities[0], identity))]
    if differences:
        raise EnsembleRunsError(f"ensemble members must share family, class names and image size: against "
                                f"{paths[0]}, " + ", and ".join(differences))
    runs = [load_run_model(path) for path in paths]
    first = runs[0]
    model = EnsembleModel([run.model for run in runs], first.task, weights, name="ensemble")
    return RunModel(model, first.task, first.image_size, first.label_map, min(run.batch_size for run in runs))


def _run_identity(path: Path) -> tuple[str, int, LabelMap] | None:
    """(family, image size, label map) of a run directory, read without its model; None when
    its files are missing or unreadable (`load_run_model` then says what is wrong)."""
    try:
        config = load_config(path / "config.yaml")
        label_map = LabelMap.from_dict(json.loads((path / "label_map.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config.model.family, config.model.image_size, label_map


def _run_differences(first, other) -> list[str]:
    """What sets run identity `other` apart from `first`, each as `what X (not Y)`."""
    if first is None or other is None:
        return []
    (family, size, labels), (first_family, first_size, first_labels) = other, first
    differs = []
    if family != first_family:
        differs.append(f"family {family} (not {first_family})")
    if labels.names != first_labels.names:
        differs.append(f"class names {list(labels.names)} (not {list(first_labels.names)})")
    elif labels.coco_ids != first_labels.coco_ids:
        differs.append(f"COCO ids {list(labels.coco_ids)} (not {list(first_labels.coco_ids)})")
    if size != first_size:
        differs.append(f"image size {size} (not {first_size})")
    return differs
