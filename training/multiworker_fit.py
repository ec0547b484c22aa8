"""`fit` for MultiWorkerMirroredStrategy: Keras 3's own `fit` cannot run there.

Keras 3.15 (and its main branch) fails under a multi-worker strategy twice over: `fit`
first reduces a distributed batch eagerly to build the model (keras-team/keras#20585),
then its train function reduces every scalar metric with `axis=0` ("Invalid reduction
dimension 0 for input with 0 dimensions"). This loop keeps everything else Keras': the
model's own `train_step`/`test_step` run on every replica through `strategy.run`, metric
values are averaged over replicas with `strategy.reduce(MEAN, axis=None)`, and the
callbacks see the usual `on_*` calls and logs (`loss`, ..., `val_loss`, ...).

Training batches are split over workers by tf.data's auto-sharding; each global batch is
divided among the replicas, so every worker runs the same number of steps.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _reduced(strategy: tf.distribute.Strategy, logs: dict) -> dict:
    return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in logs.items()}


def fit_multiworker(model: keras.Model, strategy: tf.distribute.Strategy, train_batches, val_batches,
                    epochs: int, steps_per_epoch: int, initial_epoch: int, callbacks: list,
                    verbose: int) -> None:
    """`model.fit(train_batches, validation_data=val_batches, ...)` under `strategy`.

    `train_batches` may be endless: every epoch takes the next `steps_per_epoch` batches.

    Call it with a model compiled and its optimizer built inside `strategy.scope()`, but from
    outside the scope: callbacks run only on some workers (the chief saves checkpoints) and
    must not create mirrored variables there.
    """
    train_data = strategy.experimental_distribute_dataset(train_batches)
    val_data = strategy.experimental_distribute_dataset(val_batches)

    @tf.function
    def train_step(batch):
        return _reduced(strategy, strategy.run(model.train_step, args=(batch,)))

    @tf.function
    def test_step(batch):
        return _reduced(strategy, strategy.run(model.test_step, args=(batch,)))

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs)
    model.stop_training = False
    callback_list.on_train_begin()
    train_iterator = iter(train_data)
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs: dict = {}
        for step in range(steps_per_epoch):
            batch = next(train_iterator)
            callback_list.on_train_batch_begin(step)
            logs = train_step(batch)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = {name: float(value) for name, value in logs.items()}
        model.reset_metrics()
        val_logs: dict = {}
        for batch in val_data:
            val_logs = test_step(batch)
        epoch_logs.update({f"val_{name}": float(value) for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
