"""Object crops for `detseg pretrain`: fixed context for evaluation, random context for training."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detseg.training.pretrain import crops_from_coco, grown_box, sample_batches


def test_grown_box_adds_context_per_side_and_stays_in_the_image():
    box = tf.constant([0.2, 0.4, 0.6, 0.5])  # yxyx: 0.4 high, 0.1 wide
    grown = grown_box(box, tf.constant([0.5, 1.0, 0.25, 2.0])).numpy()
    np.testing.assert_allclose(grown, [0.2 - 0.2, 0.4 - 0.1, 0.6 + 0.1, 0.5 + 0.2], atol=1e-6)
    np.testing.assert_allclose(grown_box(tf.constant([0.0, 0.0, 0.9, 1.0]), tf.fill([4], 1.0)).numpy(),
                               [0.0, 0.0, 1.0, 1.0])


def test_samples_are_tight_boxes_and_evaluation_crops_are_fixed(synthetic_dir):
    annotations = synthetic_dir / "annotations" / "instances_train.json"
    samples = crops_from_coco(annotations)
    first = samples.take(np.arange(1))
    record_box = first.boxes[0]
    assert np.all(record_box[2:] > record_box[:2])  # a tight, non-empty object box
    eval_crops = [next(iter(sample_batches(first, 32, 1, False, seed)))[0].numpy() for seed in (0, 1)]
    np.testing.assert_array_equal(eval_crops[0], eval_crops[1])
