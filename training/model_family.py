"""`ModelFamily`: what the two-stage trainer needs from one model family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class ModelFamily:
    """A model family, as the two-stage trainer sees it.

    - `task`: the pipeline task (`detseg.core.contract.TASKS`) giving its `(x, y)` batches.
    - `head_config`: frozen dataclass of its `model.head` options.
    - `bottleneck_levels`: backbone outputs the head reads (`"P3"`..`"P5"`); stage 1 caches them.
    - `build_head(feature_shapes, num_classes, head_config)`: a Keras model from the
      bottleneck features (one tensor if one level, else a dict by level) to the outputs.
    - `build_model(backbone, head, head_config, image_size)`: the trainable task model around
      `head` (sharing its weights): raw pixels -> outputs, or, with `backbone=None` (stage 1),
      bottleneck features -> the same outputs in the same `image_size` frame.
    - `compile_kwargs(head_config)`: extra `compile` arguments (`loss`, `metrics`, ...); `{}`
      when the task model computes its own loss in `compute_loss`.
    - `evaluate(model, eval_batches, label_map, dataset)`: JSON-ready metrics of the whole
      model on `pipelines.build_eval_dataset(..., with_targets=True)` batches `(x, y, meta)`
      of `dataset` (the val split, as on disk). Frame-based families score the batches'
      targets; detectors score COCO results against `dataset` (`training.detection_evaluation`).
    - `headline_metric`: the key of `evaluate`'s result printed as the run's summary.
    """

    task: str
    head_config: type
    bottleneck_levels: tuple[str, ...]
    build_head: Callable[..., Any]
    build_model: Callable[..., Any]
    compile_kwargs: Callable[[Any], dict]
    evaluate: Callable[..., dict]
    headline_metric: str
