"""EMA under `precision: mixed_float16`: Keras wraps the optimizer in a `LossScaleOptimizer`,
whose inner optimizer keeps the averages; the epoch-end swap must reach them there.

Seen to fail (ValueError: the optimizer keeps no weight averages) when `training.ema`
looks for the averages on the wrapper itself.
"""

from __future__ import annotations

import keras
import numpy as np

from detseg.training.ema import AveragedWeightsAtEpochEnd, averaged_weights


def test_epoch_end_swap_reaches_the_averages_inside_a_loss_scale_optimizer():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    inner = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.5)
    model.compile(optimizer=keras.mixed_precision.LossScaleOptimizer(inner), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
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
        np.testing.assert_array_equal(at_end, average)
        assert not np.allclose(average, raw)
    for final, average in zip(model.trainable_variables, seen["averages"]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(final), average)
