"""Export workflow: a finished training run, or an ensemble of runs, as a TF Serving SavedModel.

`export_run` is the whole adapter between a run directory and a served model: load the
run's final model (any family) with `detseg.training.run_model.load_run_model`, wrap it with the
family-agnostic `detseg.serving.serving_module.serving_module_for` (which serves
`model.predict_step`, the same decoded-prediction dict for every family), and write it
atomically as `model_base_path/<version>/` with a `models.config` beside the base path.
`export_ensemble` does the same with several runs of one family, image size and class
list loaded as one `models.ensemble.EnsembleModel` (`model_sources.load_ensemble_runs`,
the loader `detseg evaluate --ensemble` uses): its graph runs every member and merges
their predictions, and it serves the same signatures and outputs as a single run's export.
The command line (`detseg export`) only parses arguments and calls these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def export_run(run_dir: str | os.PathLike, model_base_path: str | os.PathLike,
               model_name: str | None = None, version: int | None = None) -> Path:
    """Export `run_dir`'s final model; returns the written `model_base_path/<version>` folder.

    Args:
      run_dir: a finished run directory (config.yaml, label_map.json, model.keras).
      model_base_path: the model's base folder; versions go in numbered sub-folders.
      model_name: the name in `models.config` (default: the run directory's name).
      version: the version number (default: the next free one).
    """
    from detseg.training.run_model import load_run_model

    return _export(load_run_model(run_dir), model_base_path, model_name or Path(run_dir).resolve().name, version)


def export_ensemble(run_dirs: Sequence[str | os.PathLike], model_base_path: str | os.PathLike,
                    model_name: str | None = None, version: int | None = None,
                    weights: Sequence[float] | None = None) -> Path:
    """Export the ensemble of `run_dirs` as ONE SavedModel; returns its `model_base_path/<version>`.

    The runs must share family, class names and image size (else `EnsembleRunsError` names
    the runs and what differs). `model_name` defaults to the base path's folder name;
    `weights` are the members' weights (default 1 each).
    """
    from detseg.workflows.model_sources import load_ensemble_runs

    return _export(load_ensemble_runs(run_dirs, weights), model_base_path,
                   model_name or Path(model_base_path).resolve().name, version)


def _export(run, model_base_path: str | os.PathLike, model_name: str, version: int | None) -> Path:
    """A loaded `training.run_model.RunModel` -> `model_base_path/<version>/`."""
    from detseg.serving.export import export_saved_model
    from detseg.serving.serving_module import serving_module_for

    module = serving_module_for(run.model, run.task, run.image_size, list(run.label_map.names))
    return export_saved_model(module, Path(model_base_path), version, model_name=model_name)
