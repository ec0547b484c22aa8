"""Polyak averaging (EMA) of the weights during `fit`, on Keras' own `use_ema` optimizers.

Keras keeps the moving average in the optimizer (`use_ema=True`, one average per trainable
variable) and copies it into the model only when `fit` ends. detseg needs the averaged
weights earlier: validation, the task metric (`EvaluationCallback`), the best checkpoint
and the last checkpoint of every epoch are computed from them. So, around every epoch's
end, `AveragedWeightsAtEpochEnd` swaps the model's variables with their averages (the
averages go into the model, the raw weights into the optimizer's average slots), and
swaps back when the next epoch begins, so training continues from the raw weights.

A checkpoint saved in between therefore holds the averaged weights as the model's
weights and the raw ones in the optimizer's slots: loading it gives the averaged model
(what evaluation and export want), and `swap_weights_with_averages` once after loading
it gives back the training state (what a resumed run wants).
"""

from __future__ import annotations

import keras

from detseg.training.config_schema import EmaConfig


def ema_optimizer_options(ema: EmaConfig) -> dict:
    """Keyword arguments of a Keras optimizer for `ema` (empty when averaging is off)."""
    return {"use_ema": True, "ema_momentum": ema.momentum} if ema.enabled else {}


def weights_description(ema: EmaConfig) -> str:
    """What a run's checkpoints and final model hold, in words (the log and evaluation.json)."""
    return f"ema (momentum {ema.momentum})" if ema.enabled else "raw"


def _averaging(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that keeps the averages: the inner one of a `LossScaleOptimizer`
    (`precision: mixed_float16` wraps the configured optimizer in one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _averages(optimizer: keras.optimizers.Optimizer) -> list:
    optimizer = _averaging(optimizer)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or averages is None:
        raise ValueError("the optimizer keeps no weight averages: build it with use_ema=True and "
                         "call optimizer.build(model.trainable_variables) first")
    return averages


def averaged_weights(optimizer: keras.optimizers.Optimizer) -> list:
    """The optimizer's averages as numpy arrays, in `optimizer`'s trainable-variable order."""
    return [keras.ops.convert_to_numpy(average) for average in _averages(optimizer)]


def swap_weights_with_averages(optimizer: keras.optimizers.Optimizer) -> None:
    """Exchange every trainable variable's value with its moving average, in place."""
    for variable, average in zip(_averaging(optimizer)._trainable_variables, _averages(optimizer)):
        if average is None:
            continue
        raw = keras.ops.convert_to_numpy(variable)
        variable.assign(average)
        average.assign(raw)


def copy_weights_into_averages(optimizer: keras.optimizers.Optimizer) -> None:
    """Averages := current weights (so Keras' end-of-fit copy of averages changes nothing)."""
    for variable, average in zip(_averaging(optimizer)._trainable_variables, _averages(optimizer)):
        if average is not None:
            average.assign(variable)


class AveragedWeightsAtEpochEnd(keras.callbacks.Callback):
    """The averaged weights in the model during validation and every `on_epoch_end`.

    Put it FIRST in the callbacks list, so the callbacks after it (task metric, metrics
    CSV, checkpoints) see the averaged weights, and put its `end_of_fit_guard()` LAST.
    `swapped=True` when the model starts with the averages in it (resumed from a checkpoint
    whose averages were not swapped back).
    """

    def __init__(self, swapped: bool = False):
        super().__init__()
        self.swapped = swapped

    def _set_swapped(self, wanted: bool) -> None:
        if self.swapped != wanted:
            swap_weights_with_averages(self.model.optimizer)
            self.swapped = wanted

    def on_epoch_begin(self, epoch, logs=None):
        self._set_swapped(False)

    def on_test_begin(self, logs=None):
        self._set_swapped(True)

    def on_test_end(self, logs=None):
        pass  # stays swapped until the next epoch begins: on_epoch_end wants the averages

    def on_epoch_end(self, epoch, logs=None):
        self._set_swapped(True)

    def end_of_fit_guard(self) -> keras.callbacks.Callback:
        """A callback for the END of the list: when `fit` is about to stop (last epoch, early
        stopping, divergence), it copies the model's (averaged) weights into the averages,
        because Keras overwrites the model with the averages when `fit` returns."""
        return _EndOfFitGuard(self)


class _EndOfFitGuard(keras.callbacks.Callback):
    def __init__(self, swap: AveragedWeightsAtEpochEnd):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = epoch + 1 >= (self.params or {}).get("epochs", epoch + 1)
        if self.swap.swapped and (last_epoch or self.model.stop_training):
            copy_weights_into_averages(self.model.optimizer)
            self.swap.swapped = False  # the raw weights are gone: nothing to swap back
