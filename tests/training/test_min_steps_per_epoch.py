"""Epochs as whole passes: at least `stageN.min_steps_per_epoch` steps (small data), and
each pass's order a function of (seed, pass number), so a resumed run sees the same batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detseg.training.config import ConfigError, load_config
from detseg.training.feature_cache import CachedFeatures
from detseg.training.transfer_stages import feature_batches, passes_per_epoch


def test_a_short_train_set_makes_an_epoch_of_whole_passes_reaching_the_minimum():
    lines = []
    assert passes_per_epoch(2, 25, 2, lines.append) == (13, 26)  # 13 passes of 2 steps
    assert lines == ["stage 2: the train set makes 2 batches; an epoch repeats it 13 times "
                     "(26 steps, stage2.min_steps_per_epoch=25)"]


@pytest.mark.parametrize("min_steps", [0, 1, 2])
def test_a_train_set_long_enough_is_one_pass(min_steps):
    lines = []
    assert passes_per_epoch(2, min_steps, 1, lines.append) == (1, 2) and lines == []


def _twelve_examples() -> CachedFeatures:
    ids = np.arange(12, dtype=np.int64)
    return CachedFeatures({"P5": ids.astype(np.float32).reshape(12, 1)}, ids, key="test")


def _ids_of(batches, count: int) -> list[np.ndarray]:
    return [y.numpy() for _, y in itertools.islice(batches, count)]


def test_feature_passes_each_hold_every_example_once_in_a_new_order():
    batches = _ids_of(feature_batches(_twelve_examples(), ("P5",), 8, True, seed=0, first_pass=0), 26)
    assert [len(b) for b in batches[:4]] == [8, 4, 8, 4]  # batched within each pass
    passes = [np.concatenate(batches[i:i + 2]) for i in range(0, 26, 2)]
    assert all(sorted(p) == list(range(12)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled from pass to pass


def test_a_run_resumed_at_a_pass_gets_the_batches_an_uninterrupted_run_got_there():
    uninterrupted = _ids_of(feature_batches(_twelve_examples(), ("P5",), 8, True, seed=4, first_pass=0), 10)
    resumed = _ids_of(feature_batches(_twelve_examples(), ("P5",), 8, True, seed=4, first_pass=3), 4)
    for a, b in zip(uninterrupted[6:], resumed):
        np.testing.assert_array_equal(a, b)
    other_seed = _ids_of(feature_batches(_twelve_examples(), ("P5",), 8, True, seed=5, first_pass=3), 4)
    assert any(not np.array_equal(a, b) for a, b in zip(resumed, other_seed))


def test_a_negative_minimum_is_a_config_error():
    with pytest.raises(ConfigError, match="stage2.min_steps_per_epoch"):
        load_config("smoke/yolo", overrides=["stage2.min_steps_per_epoch=-1"])
