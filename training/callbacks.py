"""Training callbacks: resumable checkpoints + early stopping, NaN stop, metrics CSV.

`StageCheckpoint` owns everything that must survive a crash: after every epoch it saves
the latest weights (optimizer state included), the best weights, and the `RunState`
(epoch, best value, early-stopping patience used), in that order. Early stopping lives
here too because it needs the same persisted best-so-far memory.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from detseg.core.atomic_files import write_file_atomic
from detseg.training.run_directory import RunDirectory, RunState


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite; the message says where and what to change."""


class StageCheckpoint(keras.callbacks.Callback):
    """Best/last checkpoints and the run state after every epoch of one stage.

    `monitor` is a logs key (e.g. `val_loss`), `mode` "min" or "max". With `patience`
    set, training stops after that many epochs without an improvement of `min_delta`.
    The current state is `self.state` (a `RunState`), updated before it is written.
    """

    def __init__(self, run_dir: RunDirectory, state: RunState, monitor: str, mode: str,
                 patience: int | None = None, min_delta: float = 0.0):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.stopped_early = False

    def _improved(self, value: float) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"early_stopping.monitor '{self.monitor}' is not among the epoch "
                             f"metrics {sorted(logs)}")
        value = float(logs[self.monitor])
        stage = self.state.stage
        improved = math.isfinite(value) and self._improved(value)
        if improved:
            self.run_dir.save_weights(self.model, self.run_dir.best_checkpoint(stage))
        last = self.run_dir.last_checkpoint_name(stage, epoch + 1)
        self.run_dir.save_weights(self.model, self.run_dir.checkpoint_dir / last)
        self.state = replace(
            self.state, epochs_done=epoch + 1, last_checkpoint=last,
            best_value=value if improved else self.state.best_value,
            best_epoch=epoch + 1 if improved else self.state.best_epoch,
            epochs_without_improvement=0 if improved else self.state.epochs_without_improvement + 1,
            optimizer_iterations=int(self.model.optimizer.iterations.numpy()))
        self.run_dir.write_state(self.state)
        self.run_dir.remove_stale_checkpoints(keep=last)
        if self.patience is not None and patience_used_up(self.state, self.patience):
            self.stopped_early = True
            self.model.stop_training = True


def patience_used_up(state: RunState, patience: int) -> bool:
    """Early stopping's rule: `patience` epochs in a row without improvement (0: the first one)."""
    waited = state.epochs_without_improvement
    return waited > 0 and waited >= patience


class NanLossStop(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, remembering where.

    Keras' own `TerminateOnNaN` only prints; the trainer turns `self.diverged_at` into a
    `TrainingDivergedError` that says what to change.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at: tuple[int, int, float] | None = None  # (epoch, batch, loss)
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.diverged_at = (self._epoch, batch, float(loss))
            self.model.stop_training = True


def diverged_error(stop: NanLossStop, stage: int, lr_key: str) -> TrainingDivergedError:
    epoch, batch, loss = stop.diverged_at
    return TrainingDivergedError(
        f"training diverged: loss is {loss} at stage {stage}, epoch {epoch + 1}, batch {batch + 1}; "
        f"lower the learning rate ({lr_key}=...) or check the data; the last good checkpoint "
        f"is kept in the run directory")


class MetricsCsv(keras.callbacks.Callback):
    """Appends `stage, epoch, lr, <logs...>` to `metrics.csv` after every epoch.

    Columns are the union over the file's rows: a new metric rewrites the header.
    """

    def __init__(self, path: Path, stage: int, writable: bool = True):
        super().__init__()
        self.path = Path(path)
        self.stage = stage
        self.writable = writable

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.writable:
            return
        row = {"stage": self.stage, "epoch": epoch + 1, "lr": current_learning_rate(self.model)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        rows = read_metrics(self.path) + [row]
        write_metrics(self.path, rows)


class ScalarEventLog(keras.callbacks.Callback):
    """TensorBoard scalars (every epoch metric and the learning rate) in `log_dir`.

    Written with TensorFlow's core `tf.summary.write` and the scalars plugin's metadata,
    so TensorBoard shows them as scalar charts; keras' `TensorBoard` callback needs the
    `tensorboard` package installed even to write, this does not. Step = epoch number.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        values = {"learning_rate": current_learning_rate(self.model), **(logs or {})}
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=epoch + 1,
                                 metadata=metadata)
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def current_learning_rate(model) -> float:
    optimizer = model.optimizer
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write `rows` as CSV (every key seen is a column, in order of appearance), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write_csv(temporary: Path) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as f:  # csv writes its own line ends
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    write_file_atomic(path, write_csv)


def truncate_metrics(path: Path, stage: int, epochs_done: int) -> None:
    """Drop rows a crashed process wrote past the checkpoint it is resumed from."""
    rows = read_metrics(path)
    kept = [r for r in rows if int(r["stage"]) < stage
            or (int(r["stage"]) == stage and int(r["epoch"]) <= epochs_done)]
    if len(kept) != len(rows):
        write_metrics(path, kept)


def progress_verbosity() -> int:
    """Keras' progress bar on a terminal; one line per epoch when logging to a file (CI)."""
    return 1 if sys.stdout.isatty() else 2
