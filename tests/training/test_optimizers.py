"""optimizer.kind: every kind builds from the config and takes a step; EMA swaps are exact."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from detseg.training.config import load_config
from detseg.training.ema import AveragedWeightsAtEpochEnd, averaged_weights, swap_weights_with_averages
from detseg.training.transfer_stages import build_optimizer

KEY_CLASSES = {"sgd": keras.optimizers.SGD, "adagrad": keras.optimizers.Adagrad,
               "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
               "adamw": keras.optimizers.AdamW}


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    return model


def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")


@pytest.mark.parametrize("overrides", [["optimizer.kind=sgd", "optimizer.nesterov=true"], ["optimizer.kind=adagrad"],
                                       ["optimizer.kind=rmsprop"], ["optimizer.kind=adam"],
                                       ["optimizer.kind=adamw", "optimizer.weight_decay=0.01"]])
def test_each_optimizer_kind_builds_and_takes_a_step(overrides):
    config = load_config("smoke/clsloc", overrides)
    optimizer = build_optimizer(config, 0.01)
    assert type(optimizer) is KEY_CLASSES[config.optimizer.kind]
    if config.optimizer.kind == "sgd":
        assert optimizer.nesterov and optimizer.momentum == 0.9
    if config.optimizer.kind == "adamw":
        assert optimizer.weight_decay == pytest.approx(0.01)
    model = tiny_model()
    model.compile(optimizer=optimizer, loss="mse")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(*batch())
    assert int(optimizer.iterations.numpy()) == 1
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_an_unknown_optimizer_kind_is_refused_naming_the_key():
    from detseg.training.dataclass_yaml import ConfigError

    with pytest.raises(ConfigError, match="optimizer.kind"):
        load_config("smoke/clsloc", ["optimizer.kind=lbfgs"])


@pytest.mark.parametrize("loss_scaled", [False, True], ids=["plain", "inside_a_loss_scale_optimizer"])
def test_ema_callback_puts_averages_in_the_model_at_epoch_end_and_back_after(loss_scaled):
    """`loss_scaled`: the optimizer wrapped as `precision: mixed_float16` wraps it; the
    averages live on the inner optimizer, and the swap must find them there (seen to fail
    with "keeps no weight averages" when `training.ema` looked on the wrapper)."""
    config = load_config("smoke/clsloc", ["ema.enabled=true", "ema.momentum=0.5"])
    model = tiny_model()
    optimizer = build_optimizer(config, 0.05)
    model.compile(optimizer=keras.mixed_precision.LossScaleOptimizer(optimizer) if loss_scaled else optimizer,
                  loss="mse")
    x, y = batch()
    seen = {}

    class Look(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            seen["raw"] = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
            seen["averages"] = averaged_weights(self.model.optimizer)

        def on_epoch_end(self, epoch, logs=None):
            seen["at_epoch_end"] = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    swap = AveragedWeightsAtEpochEnd()
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[swap, Look(), swap.end_of_fit_guard()])
    for average, at_end, raw in zip(seen["averages"], seen["at_epoch_end"], seen["raw"]):
        np.testing.assert_allclose(at_end, average, rtol=1e-6)  # the callbacks after it see the averages
        assert not np.allclose(average, raw)
    # After fit, the model holds the averages (not the raw weights Keras would copy back).
    for final, average in zip(model.trainable_variables, seen["averages"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(final), average, rtol=1e-6)


def test_swapping_twice_restores_weights_and_averages():
    config = load_config("smoke/clsloc", ["ema.enabled=true"])
    model = tiny_model()
    model.compile(optimizer=build_optimizer(config, 0.05), loss="mse")
    model.fit(*batch(), batch_size=2, epochs=1, verbose=0)  # Keras copies the averages in at the end
    model.train_on_batch(*batch())  # raw weights move away from the averages again
    raw, averages = model.get_weights(), averaged_weights(model.optimizer)
    swap_weights_with_averages(model.optimizer)
    for now, average in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(now), average)
    swap_weights_with_averages(model.optimizer)
    for now, before in zip(model.get_weights(), raw):
        np.testing.assert_allclose(now, before)
