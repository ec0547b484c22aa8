"""Strategy selection: the default strategy, TF_CONFIG checks, which task is the chief."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from detseg.training.strategy import StrategyError, build_strategy, is_chief, is_chief_task


def resolver(cluster: dict, task_type: str, task_id: int):
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


def test_default_strategy_is_one_replica_and_chief():
    strategy = build_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert is_chief(strategy)


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG"):
        build_strategy("multiworker")


@pytest.mark.parametrize("text", ["{not json", json.dumps({"cluster": {}}),
                                  json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}})])
def test_malformed_tf_config_is_named(monkeypatch, text):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(StrategyError, match="TF_CONFIG is not a valid cluster spec"):
        build_strategy("multiworker")


def test_unknown_strategy():
    with pytest.raises(StrategyError, match="horovod"):
        build_strategy("horovod")


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
    ({"chief": ["c:0"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0, False),
])
def test_chief_follows_tensorflow_convention(cluster, task_type, task_id, chief):
    assert is_chief_task(resolver(cluster, task_type, task_id)) is chief
