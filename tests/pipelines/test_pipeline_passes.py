"""Training passes (`build_training_passes(...).from_pass(k)`): endless, batched within each pass,
each pass's order and augmentation a function of (seed, pass number) alone, so a run
resumed at pass k gets exactly the batches an uninterrupted run got there."""

from __future__ import annotations

import itertools

import numpy as np

from detseg.pipelines import AugmentConfig
from detseg.pipelines.dataset import build_training_passes
from drawn_datasets import random_drawn_images

SIZE = 32


def _pixels(batches, count: int) -> list[np.ndarray]:
    return [x.numpy() for x, _ in itertools.islice(batches, count)]


def test_a_resumed_pass_equals_the_uninterrupted_one_and_passes_differ(drawn_dataset):
    dataset = drawn_dataset(random_drawn_images(5, seed=2))

    def passes(first_pass, seed=0):
        training = build_training_passes(dataset, "detection", SIZE, batch_size=2, augment=AugmentConfig(),
                                         seed=seed)
        assert training.steps_per_pass == 3
        return training.from_pass(first_pass)

    uninterrupted = _pixels(passes(0), 9)  # 3 batches a pass (2 + 2 + 1)
    assert [len(x) for x in uninterrupted[:6]] == [2, 2, 1, 2, 2, 1]
    resumed = _pixels(passes(2), 3)
    for a, b in zip(uninterrupted[6:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(uninterrupted[0], uninterrupted[3])  # a new order / draw each pass
    assert not np.array_equal(resumed[0], _pixels(passes(2, seed=1), 1)[0])
