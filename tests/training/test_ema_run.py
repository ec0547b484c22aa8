"""EMA end to end: with `ema.enabled`, the best checkpoint, the final model, its evaluation and
its export hold the optimizer's averaged weights, not the raw ones; the run directory says so.

One cls+loc smoke run (stage 1 on cached features, then 2 fine-tuning epochs) with
`ema.momentum=0.9`, so the averages sit visibly apart from the raw weights after a few
steps. A callback after the run's own reads, at the last training step of every
fine-tuning epoch, the optimizer's averages and the raw weights (what Keras' `use_ema`
holds, independently of detseg's swapping); the run state names the best epoch. The
final `model.keras` and the exported SavedModel's variables must contain every averaged
array of that epoch, bit for bit, and none of the raw ones.

Seen to fail when `AveragedWeightsAtEpochEnd` never swaps (the checkpoints, so the final
model and the export, hold the raw weights).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.training.config import load_config
from detseg.training.ema import averaged_weights
from detseg.training.run_directory import RunDirectory
from detseg.training.trainer import train
from detseg.workflows.export import export_run

MOMENTUM = 0.9


class LastStepWeights(keras.callbacks.Callback):
    """`epochs[(fit number, epoch)] = (averages, raw)` at the epoch's last training step:
    the optimizer's moving averages and the model's raw trainable weights, as numpy arrays."""

    def __init__(self):
        super().__init__()
        self.fits, self.epochs, self._latest = 0, {}, None

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_train_batch_end(self, batch, logs=None):
        raw = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
        self._latest = (averaged_weights(self.model.optimizer), raw)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[(self.fits, epoch + 1)] = self._latest


def contains(arrays: list[np.ndarray], wanted: np.ndarray) -> bool:
    return any(a.shape == wanted.shape and np.array_equal(a, wanted) for a in arrays)


def assert_holds_averages_not_raw(arrays: list[np.ndarray], averages, raw, where: str) -> None:
    apart = [(a, r) for a, r in zip(averages, raw) if np.max(np.abs(a - r)) > 1e-6]
    assert len(apart) >= len(averages) // 2, "momentum too high to tell averages from raw weights"
    missing = [a.shape for a in averages if not contains(arrays, a)]
    assert not missing, f"{where}: no variable equals the averaged weights of shapes {missing}"
    raw_found = [r.shape for _, r in apart if contains(arrays, r)]
    assert not raw_found, f"{where}: holds the RAW (non-averaged) weights of shapes {raw_found}"


@pytest.mark.slow
def test_best_checkpoint_final_model_and_export_hold_the_averaged_weights(tmp_path):
    config = load_config("smoke/clsloc", [f"runs_dir={tmp_path / 'runs'}", "ema.enabled=true",
                                          f"ema.momentum={MOMENTUM}", "stage1.epochs=1", "stage2.epochs=2"])
    seen = LastStepWeights()
    result = train(config, verbose=0, log=lambda message: None, callbacks=[seen])

    state = RunDirectory(result.run_dir).read_state()
    assert state.stage == 2 and state.best_epoch in (1, 2)
    averages, raw = seen.epochs[(2, state.best_epoch)]  # fit 2 is stage 2

    final = keras.saving.load_model(result.run_dir / "model.keras", compile=False)
    assert_holds_averages_not_raw([keras.ops.convert_to_numpy(w) for w in final.weights], averages, raw,
                                  "model.keras")
    best = RunDirectory(result.run_dir).best_checkpoint(2)
    final.load_weights(best)  # the best checkpoint itself (model.keras is built from it)
    assert_holds_averages_not_raw([keras.ops.convert_to_numpy(w) for w in final.weights], averages, raw,
                                  best.name)

    version = export_run(result.run_dir, tmp_path / "served" / "smoke")
    reader = tf.train.load_checkpoint(str(version / "variables" / "variables"))
    exported = [np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()]
    assert_holds_averages_not_raw(exported, averages, raw, "the exported SavedModel")

    evaluation = json.loads((result.run_dir / "evaluation.json").read_text())
    assert evaluation["weights"] == f"ema (momentum {MOMENTUM})"
