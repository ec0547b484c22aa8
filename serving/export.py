"""Write a serving module as a SavedModel in TF Serving's layout, atomically.

Layout (what TensorFlow Serving and `detseg serve` poll):

    <model_base_path>/            e.g. exports/shapes  (the model's name is its folder name)
        1/                        saved_model.pb, variables/, assets/labels.txt
        2/
    <model_base_path>/../models.config   lists every model exported beside it

A version is written into a hidden, non-numeric sibling (`.tmp-<version>-<pid>-<id>`) and
renamed to `<version>` only when complete; servers ignore non-numeric folders, so a
polling server never sees half a model.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import tensorflow as tf

from detseg.serving.model_config import CONFIG_FILENAME, update_model_config

MAX_RENAME_ATTEMPTS = 20

# Served models are never differentiated (signatures take images and return decoded
# predictions; training resumes from Keras checkpoints), so the export skips tracing and
# storing a gradient function for every custom-gradient op, which TF's default does and
# which was most of a save's time (benchmarks/export_time.py, docs/benchmarks.md). A
# reloaded export still runs every signature; `tf.GradientTape` through it is unsupported.
EXPORT_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
# What TensorFlow logs (through absl) for every such function when loading the export.
_NO_GRADIENTS_WARNING = "with ops with unsaved custom gradients"


class _DropNoGradientsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _NO_GRADIENTS_WARNING not in str(record.msg)


def load_saved_model(version_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """`tf.saved_model.load(version_dir, **kwargs)` without TF's warning, per function, that
    the export has no gradient functions: detseg exports leave them out on purpose
    (`EXPORT_OPTIONS`), so the warning would only alarm."""
    absl_logger = logging.getLogger("absl")
    quiet = _DropNoGradientsWarning()
    absl_logger.addFilter(quiet)
    try:
        return tf.saved_model.load(str(version_dir), **kwargs)
    finally:
        absl_logger.removeFilter(quiet)


class ExportError(ValueError):
    """An export cannot proceed; the message names the path or version at fault."""


def numeric_versions(model_base_path: str | os.PathLike) -> list[int]:
    """The version numbers present under a base path (numeric folder names), ascending."""
    base = Path(model_base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_base_path: str | os.PathLike) -> int:
    """One more than the highest existing version; 1 for an empty or missing base path."""
    versions = numeric_versions(model_base_path)
    return versions[-1] + 1 if versions else 1


def _signatures_of(module: Any) -> dict[str, Any]:
    signatures = getattr(module, "signatures", None)
    if not callable(signatures):
        raise ExportError(f"{type(module).__name__} has no signatures() method: export a "
                          f"serving.serving_module.ServingModule (or a tf.Module that has one)")
    return signatures()


def _rename_into_place(tmp: Path, base: Path, version: int, pick_next: bool) -> Path:
    """Rename the finished temporary folder to `base/<version>`; on a race, take the next number."""
    for _ in range(MAX_RENAME_ATTEMPTS):
        target = base / str(version)
        if not target.exists():
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        if not pick_next:
            raise ExportError(f"{target} already exists: choose another version or leave it unset")
        version = max(version + 1, next_version(base))
    raise ExportError(f"{base}: could not find a free version number after {MAX_RENAME_ATTEMPTS} tries")


def export_saved_model(module: Any, model_base_path: str | os.PathLike, version: int | None = None, *,
                       model_name: str | None = None, config_base_path: str | None = None,
                       write_config: bool = True) -> Path:
    """Save `module` (a `ServingModule`) as `model_base_path/<version>/` and return that path.

    Args:
      module: has `signatures() -> {name: tf.function or concrete function}` (ServingModule does).
      model_base_path: the model's folder; its name is the model name unless `model_name`.
      version: a positive integer; default the next free one. An existing version is an error.
      config_base_path: the base path written into models.config (default: the absolute
        `model_base_path`; give e.g. "/models/<name>" for a Docker container's view).
      write_config: also add/update the model in `model_base_path/../models.config`.
    """
    base = Path(model_base_path)
    if version is not None and (int(version) != version or int(version) < 1):
        raise ExportError(f"version must be a positive integer, got {version!r}")
    if version is not None and (base / str(int(version))).exists():
        raise ExportError(f"{base / str(int(version))} already exists: versions are never overwritten")
    signatures = _signatures_of(module)
    base.mkdir(parents=True, exist_ok=True)
    chosen = int(version) if version is not None else next_version(base)
    tmp = base / f".tmp-{chosen}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures, options=EXPORT_OPTIONS)
        target = _rename_into_place(tmp, base, chosen, pick_next=version is None)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if write_config:
        name = model_name or base.resolve().name
        update_model_config(base.resolve().parent / CONFIG_FILENAME, name,
                            config_base_path or str(base.resolve()))
    return target
