"""Workflows: the steps a command runs, callable from Python without the command line.

    from detseg.workflows import (train_model, evaluate_model, export_run, start_server,
                                  predict_images)

Each returns objects (a `TrainResult`, an `Evaluation`, the exported version folder, the
running `ModelServer`, `ImagePrediction`s), never printed text; where a step has progress
to tell, it takes an optional `log` callable. The `detseg` commands parse their
arguments, call these and print. See README.md, "Python API".
"""

from detseg.workflows.evaluate import Evaluation, evaluate_model, evaluate_results_file
from detseg.workflows.export import export_run
from detseg.workflows.predict import ImagePrediction, predict_images
from detseg.workflows.serve import start_server
from detseg.workflows.train import resolve_train_config, train_model

__all__ = ["Evaluation", "ImagePrediction", "evaluate_model", "evaluate_results_file", "export_run",
           "predict_images", "resolve_train_config", "start_server", "train_model"]
