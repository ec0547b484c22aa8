"""Workflows: the steps a command runs, callable from Python without the command line.

    from detseg.workflows import (train_model, evaluate_model, export_run, start_server,
                                  predict_images)

Each returns objects (a `TrainResult`, an `Evaluation`, the exported version folder, the
running `ModelServer`, `ImagePrediction`s), never printed text; where a step has progress
to tell, it takes an optional `log` callable. The `detseg` commands parse their
arguments, call these and print. See README.md, "Python API".

The names below load their module (and TensorFlow) on first use, so that a command
importing one workflow module (`detseg --help`, `detseg data ...`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for readers and type checkers
    from detseg.workflows.evaluate import Evaluation, evaluate_model, evaluate_results_file
    from detseg.workflows.export import export_run
    from detseg.workflows.predict import ImagePrediction, predict_images
    from detseg.workflows.serve import start_server
    from detseg.workflows.train import resolve_train_config, train_model

_MODULE_OF = {
    "Evaluation": "detseg.workflows.evaluate",
    "evaluate_model": "detseg.workflows.evaluate",
    "evaluate_results_file": "detseg.workflows.evaluate",
    "export_run": "detseg.workflows.export",
    "ImagePrediction": "detseg.workflows.predict",
    "predict_images": "detseg.workflows.predict",
    "start_server": "detseg.workflows.serve",
    "resolve_train_config": "detseg.workflows.train",
    "train_model": "detseg.workflows.train",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'detseg.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
