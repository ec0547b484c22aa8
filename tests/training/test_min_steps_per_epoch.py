"""Small data: `stageN.min_steps_per_epoch` makes an epoch whole passes of at least N steps."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.training.config import ConfigError, load_config
from detseg.training.transfer_stages import epoch_of_at_least


def _twelve_images_in_batches_of_eight() -> tf.data.Dataset:
    ids = tf.data.Dataset.range(12).shuffle(12, seed=0, reshuffle_each_iteration=True)
    return ids.batch(8)  # 2 steps: 8 + 4 images


def test_a_short_train_set_is_repeated_in_whole_passes_to_reach_the_minimum():
    lines = []
    epoch, steps = epoch_of_at_least(_twelve_images_in_batches_of_eight(), 25, 2, lines.append)
    batches = [batch.numpy() for batch in epoch]
    assert steps == len(batches) == 26  # 13 passes of 2 steps
    seen = np.concatenate(batches)
    assert np.array_equal(np.bincount(seen, minlength=12), np.full(12, 13))  # every image 13 times
    assert not all(np.array_equal(batches[0], batches[2 * k]) for k in range(1, 13))  # reshuffled
    assert lines == ["stage 2: the train set makes 2 batches; an epoch repeats it 13 times "
                     "(26 steps, stage2.min_steps_per_epoch=25)"]


@pytest.mark.parametrize("min_steps", [0, 1, 2])
def test_a_train_set_long_enough_is_one_pass(min_steps):
    lines = []
    epoch, steps = epoch_of_at_least(_twelve_images_in_batches_of_eight(), min_steps, 1, lines.append)
    assert steps == len(list(epoch)) == 2 and lines == []


def test_a_negative_minimum_is_a_config_error():
    with pytest.raises(ConfigError, match="stage2.min_steps_per_epoch"):
        load_config("smoke/yolo", overrides=["stage2.min_steps_per_epoch=-1"])
