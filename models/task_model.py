"""`TaskModel`: the one shape of every detseg task model (as keras-hub's tasks have one).

    model.compile(optimizer="adam")     # XLA off unless asked (jit_compile=False default)
    model.fit(batches)                  # (x, y) of the batch contract
    raw = model(images)                 # raw outputs: what the loss reads
    predictions = model.predict(images) # decoded predictions in the INPUT frame

- `call(inputs, training)` returns the model's raw outputs (logits, box encodings,
  proposals...), never decoded predictions, in training and inference alike.
- `compute_loss(x, y, y_pred, sample_weight)` encodes the targets `y` (the batch contract)
  and returns the loss. Subclasses write `task_loss` (the weighted sum of their losses,
  for one replica's batch); `compute_loss` adds the tail every family shares, here only:
  the replica's share under `tf.distribute` (Keras sums the replicas' gradients) and the
  regularization losses of the sub-models. A model compiled with a `loss=` (the semantic
  segmenters' `SegmentationLoss`) gets Keras's own `compute_loss`, which does the same.
- `predict_step(data)` returns `predict_outputs(images)`: the decoded predictions of the
  model's task in the input frame, under the names `serving.task_outputs` reads, so the
  export serves `predict_step` for every family without per-family code:
  detection `{"boxes", "scores", "classes", "num_detections"}` (+ `"masks"` for instance),
  semantic `{"logits", "probabilities", "class_map"}`, classification + localization
  `{"class_probabilities", "box"}`.
- `get_config` / `from_config` round-trip, nested models included: constructor arguments
  named in `nested_model_keys` are serialized by `get_config` and rebuilt by `from_config`.
- Mixed precision (`keras.mixed_precision`, the run's `precision`): layers compute in
  bfloat16/float16 with float32 variables, but every head's last layers are
  `HEAD_OUTPUT_DTYPE` (float32), so `call`'s raw outputs, the losses, box decoding, the
  assigners, NMS and `predict_step`'s outputs stay float32 whatever the policy.
- Heads' hidden layers take their kernel initializer from the head config's `init`
  (`HEAD_INITIALIZERS`; default `glorot_uniform`, Keras's own default); prediction layers
  with a deliberate initializer (small normals, zeros, bilinear kernels) keep it.
- `compile` defaults `jit_compile=False`: NMS, `crop_and_resize` and the target assigners
  may not compile under XLA, and Keras's `"auto"` would try XLA on a GPU run. A caller
  who wants XLA passes `jit_compile=True`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

HEAD_OUTPUT_DTYPE = "float32"  # dtype of every head's last layers, under any precision policy
HEAD_INITIALIZERS = ("he_normal", "glorot_uniform")  # values of the head configs' `init`
DEFAULT_HEAD_INITIALIZER = "glorot_uniform"  # what the heads used before `init` existed


class TaskModel(keras.Model):
    """Base class of every task model (module docstring)."""

    nested_model_keys: tuple[str, ...] = ()  # constructor arguments that are Keras models/layers

    def compile(self, optimizer="rmsprop", jit_compile=False, **kwargs):
        # XLA is off unless the caller asks: NMS and crop_and_resize in these models may not compile.
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        build_optimizer_slots(self)

    def compile_from_config(self, config):
        """Re-compile on `load_model` as Keras does (it skips models whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built and self.built:
            self.optimizer.build(self.trainable_variables)  # so the saved optimizer state loads

    # ------------------------------------------------------------------ loss

    def task_loss(self, x, y, y_pred, sample_weight=None, training=True):
        """The model's own loss for one replica's batch, before `compute_loss`'s shared tail."""
        raise NotImplementedError(f"{type(self).__name__} must implement task_loss or be compiled with a loss")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`task_loss`, divided among replicas, plus regularization losses (module docstring)."""
        if self._compile_loss is not None:  # a loss given to compile(): Keras scales and adds the rest
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        if y_pred is None:
            y_pred = self(x, training=training)
        return self.finish_loss(self.task_loss(x, y, y_pred, sample_weight, training))

    def finish_loss(self, loss):
        """One replica's share of `loss` plus the regularization losses (added unscaled, as Keras does)."""
        loss = tf.cast(loss, tf.float32)
        # Under tf.distribute each replica returns its share; Keras sums the gradients.
        loss = loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
        for extra in self.losses:  # weight regularizers, if a sub-model has any
            loss = loss + tf.cast(tf.reduce_sum(extra), loss.dtype)
        return loss

    # ------------------------------------------------------------------ prediction

    def predict_outputs(self, images) -> dict[str, tf.Tensor]:
        """Inputs (pixels, or features without a backbone) -> decoded predictions in the input frame."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_outputs")

    def predict_step(self, data):
        """`x`, `(x,)`, `(x, y)` or `(x, y, w)` -> `predict_outputs(x)`: what `predict` and exports give."""
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.predict_outputs(images)

    # ------------------------------------------------------------------ serialization

    def get_config(self):
        config = super().get_config()
        config.update({key: serialize_nested(getattr(self, key)) for key in self.nested_model_keys})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in cls.nested_model_keys:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)


def build_optimizer_slots(model: keras.Model) -> None:
    """Creates `model.optimizer`'s slots for today's trainable variables, if every layer is built.

    Keras (TensorFlow backend, no distribution strategy) otherwise creates them inside the
    first trace of the train step, and a `tf.function` that creates variables is traced
    twice (a smoke YOLO training took 1.47x as long, `benchmarks/train_step_tracing.py`). As in Keras, a
    change of `trainable` takes a new `compile`. Does nothing once the optimizer is built.
    `TaskModel.compile` calls it; call it after compiling any other Keras model.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built:
        return
    if all(layer.built for layer in model._flatten_layers()):
        optimizer.build(model.trainable_variables)


def serialize_nested(layer):
    """A nested model or layer as a config dict (None stays None), for `get_config`."""
    return None if layer is None else keras.saving.serialize_keras_object(layer)
