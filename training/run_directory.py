"""The run directory `runs/<name>/` and the resumable training state kept in it.

    runs/<name>/
      config.yaml                  the resolved config (after overrides)
      label_map.json               class index <-> COCO id and name (data.coco.LabelMap)
      metrics.csv                  one row per epoch of every stage (stage, epoch, lr, losses, ...)
      tensorboard/stage<k>/        TensorBoard logs
      checkpoints/
        state.json                 where training stands: stage, epochs done, best so far
        stage<k>_last_e<NNNN>.weights.h5   the latest epoch (model + optimizer state)
        stage<k>_best.weights.h5   the epoch with the best monitored value
      pretrain/backbone.weights.h5 the backbone pretrained by stage 0 (`pretrain.epochs` > 0)
      feature_cache/               stage-1 bottleneck features (unless stage1.cache_dir is set)
      model.keras                  the final model (best epoch of the last stage)
      evaluation.json              validation metrics of the final model

Every file is written through a temporary sibling and a rename, so a process killed at
any moment leaves the previous complete version. `state.json` is written last and names
the checkpoint it belongs to, so a resumed run never pairs a state with other weights.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from detseg.core.atomic_files import write_file_atomic, write_json_atomic, write_text_atomic
from detseg.data.coco import LabelMap


class RunDirectoryError(ValueError):
    """A run directory holds something the current command cannot continue."""


@dataclass(frozen=True)
class RunState:
    """Progress of a run, persisted after every epoch.

    `stage` is the stage in progress (1 or 2); `epochs_done` counts its finished epochs;
    `best_value`/`best_epoch` and `epochs_without_improvement` carry the checkpoint and
    early-stopping memory across a restart; `stage_done` marks a finished stage.
    """

    config_fingerprint: str
    stage: int = 1
    epochs_done: int = 0
    stage_done: bool = False
    last_checkpoint: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    optimizer_iterations: int = 0
    run_done: bool = False

    def next_stage(self, stage: int) -> "RunState":
        return RunState(self.config_fingerprint, stage=stage)


class RunDirectory:
    """Paths and atomic writers for one run; only the chief worker writes (`writable`)."""

    def __init__(self, root: str | os.PathLike, writable: bool = True):
        self.root = Path(root)
        self.writable = writable

    config_path = property(lambda self: self.root / "config.yaml")
    label_map_path = property(lambda self: self.root / "label_map.json")
    metrics_path = property(lambda self: self.root / "metrics.csv")
    checkpoint_dir = property(lambda self: self.root / "checkpoints")
    state_path = property(lambda self: self.root / "checkpoints" / "state.json")
    model_path = property(lambda self: self.root / "model.keras")
    evaluation_path = property(lambda self: self.root / "evaluation.json")
    feature_cache_dir = property(lambda self: self.root / "feature_cache")
    pretrain_dir = property(lambda self: self.root / "pretrain")

    def tensorboard_dir(self, stage: int) -> Path:
        return self.root / "tensorboard" / f"stage{stage}"

    def best_checkpoint(self, stage: int) -> Path:
        return self.checkpoint_dir / f"stage{stage}_best.weights.h5"

    def last_checkpoint_name(self, stage: int, epochs_done: int) -> str:
        return f"stage{stage}_last_e{epochs_done:04d}.weights.h5"

    def read_state(self) -> RunState | None:
        if not self.state_path.is_file():
            return None
        try:
            payload = json.loads(self.state_path.read_text(encoding="utf-8"))
            return RunState(**payload)
        except (json.JSONDecodeError, TypeError) as e:
            raise RunDirectoryError(f"{self.state_path}: unreadable run state ({e}); "
                                    f"rerun with --restart to start this run afresh") from None

    def write_state(self, state: RunState) -> None:
        if self.writable:
            write_json_atomic(asdict(state), self.state_path)

    def write_text(self, path: Path, text: str) -> None:
        if self.writable:
            write_text_atomic(text, path)

    def write_label_map(self, label_map: LabelMap) -> None:
        if self.writable:
            write_json_atomic(label_map.to_dict(), self.label_map_path)

    def read_label_map(self) -> LabelMap:
        return LabelMap.from_dict(json.loads(self.label_map_path.read_text(encoding="utf-8")))

    def write_json(self, path: Path, payload: Any) -> None:
        if self.writable:
            write_json_atomic(payload, path)

    def save_weights(self, model, path: Path) -> None:
        """`model.save_weights` (layers and optimizer state) through a temporary file."""
        if self.writable:
            write_file_atomic(path, lambda temporary: model.save_weights(temporary, overwrite=True))

    def save_model(self, model) -> None:
        """`model.save` (the `.keras` archive) through a temporary file."""
        if self.writable:
            write_file_atomic(self.model_path, lambda temporary: model.save(temporary, overwrite=True))

    def remove_stale_checkpoints(self, keep: str | None) -> None:
        """Delete `stage*_last_*` files other than `keep` (called after the state names `keep`)."""
        if not self.writable:
            return
        for path in self.checkpoint_dir.glob("stage*_last_e*.weights.h5"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    def reset(self) -> None:
        """Remove everything of a previous run except the feature cache (`--restart`)."""
        if not self.writable or not self.root.exists():
            return
        for child in self.root.iterdir():
            if child == self.feature_cache_dir:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def resume_state(run_dir: RunDirectory, fingerprint: str, restart: bool) -> RunState:
    """The state to start from: a fresh one, or the saved one if it belongs to this config.

    Raises `RunDirectoryError` if `run_dir` holds a run of a different config (unless
    `restart`, which clears it first).
    """
    if restart:
        run_dir.reset()
        return RunState(fingerprint)
    saved = run_dir.read_state()
    if saved is None:
        return RunState(fingerprint)
    if saved.config_fingerprint != fingerprint:
        raise RunDirectoryError(
            f"{run_dir.root} holds a run made with a different config (fingerprint "
            f"{saved.config_fingerprint}, now {fingerprint}); use another `name=...` or pass "
            f"--restart to discard it")
    return replace(saved)
