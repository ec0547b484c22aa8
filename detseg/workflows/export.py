"""Export workflow: a finished training run as a TF Serving SavedModel.

`export_run` is the whole adapter between a run directory and a served model: load the
run's final model (any family) with `detseg.training.run_model.load_run_model`, wrap it with the
family-agnostic `detseg.serving.serving_module.serving_module_for` (which serves
`model.predict_step`, the same decoded-prediction dict for every family), and write it
atomically as `model_base_path/<version>/` with a `models.config` beside the base path.
The command line (`detseg export`) only parses arguments and calls this.
"""

from __future__ import annotations

import os
from pathlib import Path


def export_run(run_dir: str | os.PathLike, model_base_path: str | os.PathLike,
               model_name: str | None = None, version: int | None = None) -> Path:
    """Export `run_dir`'s final model; returns the written `model_base_path/<version>` folder.

    Args:
      run_dir: a finished run directory (config.yaml, label_map.json, model.keras).
      model_base_path: the model's base folder; versions go in numbered sub-folders.
      model_name: the name in `models.config` (default: the run directory's name).
      version: the version number (default: the next free one).
    """
    from detseg.serving.export import export_saved_model
    from detseg.serving.serving_module import serving_module_for
    from detseg.training.run_model import load_run_model

    run = load_run_model(run_dir)
    module = serving_module_for(run.model, run.task, run.image_size, list(run.label_map.names))
    return export_saved_model(module, Path(model_base_path), version,
                              model_name=model_name or Path(run_dir).resolve().name)
