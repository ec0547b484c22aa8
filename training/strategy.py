"""`--strategy default|mirrored|multiworker`: the tf.distribute engine a run trains under.

- `default`: TensorFlow's default (single-device) strategy.
- `mirrored`: `MirroredStrategy` over every local GPU or, without GPUs, every logical CPU
  device (tests split the CPU into two logical devices to exercise the multi-replica path).
- `multiworker`: `MultiWorkerMirroredStrategy`; the cluster and this process's role come
  from the `TF_CONFIG` environment variable, as TensorFlow documents it. It must be
  created before TensorFlow runs any op, so the trainer builds it first.

Batch sizes in configs are GLOBAL: each replica gets `batch_size / num_replicas`.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from detseg.training.config import STRATEGIES


class StrategyError(ValueError):
    """A strategy cannot be built from the current environment (e.g. no TF_CONFIG)."""


def build_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    raise StrategyError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise StrategyError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                            "(cluster.worker addresses and this process's task type/index)")
    try:
        payload = json.loads(text)
        payload["cluster"]["worker"], payload["task"]["type"], payload["task"]["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise StrategyError(f"TF_CONFIG is not a valid cluster spec ({type(e).__name__}: {e})") from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory (worker 0 of a multi-worker cluster)."""
    return is_chief_task(getattr(strategy, "cluster_resolver", None))


def is_chief_task(resolver) -> bool:
    """The chief is the `chief` task if the cluster has one, else worker 0 (TF's convention)."""
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def wait_for_all_workers(strategy: tf.distribute.Strategy) -> None:
    """A barrier across the workers of a MultiWorkerMirroredStrategy; a no-op otherwise.

    Every worker all-reduces one number, which returns only when all have called it. The
    chief writes checkpoints in `fit`'s callbacks; the others read them afterwards (the
    stage-1 head for stage 2, the best weights for the final model), so each stage ends
    here: without it a fast worker looked for a file the chief had not written yet.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    @tf.function
    def all_reduce():
        ones = strategy.run(lambda: tf.constant(1.0))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    all_reduce()
