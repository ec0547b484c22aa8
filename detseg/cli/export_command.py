"""`detseg export RUN_DIR --model_base_path PATH`: a trained run as a TF Serving SavedModel.

The run's final model (any family) is wrapped in `serving.ServingModule`, which puts
decoding, letterbox, the model (normalization included), head decoding + NMS and the
mapping back to original pixels inside the graph, then written atomically as
`PATH/<version>/` with a `models.config` beside `PATH`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Pipeline task (what the family trains on) -> serving task (what the signature returns).
SERVING_TASKS = {
    "detection": "detection",
    "instance": "detection",
    "semantic": "segmentation",
    "classification_localization": "classification_localization",
}
BACKGROUND_NAME = "background"  # class-map value 0 of segmentation models


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained run as a SavedModel for TF Serving")
    p.add_argument("run_dir", type=Path, help="a finished run directory (runs/<name>)")
    p.add_argument("--model_base_path", type=Path, required=True,
                   help="the model's base folder; versions go in numbered sub-folders")
    p.add_argument("--model_name", default=None, help="name in models.config (default: the run's name)")
    p.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    p.set_defaults(func=_export)


def export_run(run_dir: Path, model_base_path: Path, model_name: str | None = None,
               version: int | None = None) -> Path:
    """Export `run_dir`'s final model; returns the written `model_base_path/<version>`."""
    from detseg.serving.export import export_saved_model
    from detseg.training.predictions import load_run_model

    run = load_run_model(run_dir)
    module = serving_module_for(run.model, run.task, run.image_size, list(run.label_map.names))
    return export_saved_model(module, model_base_path, version,
                              model_name=model_name or Path(run_dir).resolve().name)


def serving_module_for(model, task: str, image_size: int, class_names: list[str]):
    """The `ServingModule` of a model trained on pipeline task `task` at `image_size`."""
    import tensorflow as tf

    from detseg.serving.serving_module import ServingModule

    serving_task = SERVING_TASKS[task]
    if serving_task == "classification_localization":
        def infer(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            outputs = model(pixels, training=False)
            return {"class_probabilities": outputs["class_probs"], "box": outputs["box"]}
    else:
        def infer(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            return model.predict_step(pixels)
    labels = [BACKGROUND_NAME, *class_names] if serving_task == "segmentation" else class_names
    return ServingModule(infer, task=serving_task, letterbox=image_size, label_names=labels,
                         trackables=[model])


def _export(args: argparse.Namespace) -> int:
    path = export_run(args.run_dir, args.model_base_path, args.model_name, args.version)
    print(f"exported {args.run_dir} -> {path}")
    print(f"serve it: detseg serve --model_name {args.model_name or Path(args.run_dir).resolve().name} "
          f"--model_base_path {args.model_base_path}")
    return 0
