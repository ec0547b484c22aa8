"""Segmentation losses: hand-computed values on tiny tensors, the ignore label, gradients."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import SEMANTIC_IGNORE
from detseg.models.segmentation.losses import (SegmentationLoss, SegmentationLossError, combined_segmentation_loss,
                                               pixel_cross_entropy, soft_dice_loss)

LN3 = math.log(3.0)


def two_pixels():
    """Two pixels, two classes: softmax of [0, ln 3] is [1/4, 3/4], of [0, 0] is [1/2, 1/2]."""
    logits = np.array([[[[0.0, LN3], [0.0, 0.0]]]], np.float32)  # [1, 1, 2, 2]
    labels = np.array([[[1, 0]]], np.uint8)  # [1, 1, 2]
    return labels, logits


def with_ignored_pixel(labels, logits, ignored_logits):
    """Appends a third pixel labelled SEMANTIC_IGNORE with the given logits."""
    labels = np.concatenate([labels, np.full((1, 1, 1), SEMANTIC_IGNORE, np.uint8)], axis=2)
    logits = np.concatenate([logits, np.asarray(ignored_logits, np.float32).reshape(1, 1, 1, 2)], axis=2)
    return labels, logits


def test_cross_entropy_is_the_mean_negative_log_probability_of_the_true_class():
    labels, logits = two_pixels()
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert float(pixel_cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_class_weights_make_a_weighted_mean():
    labels, logits = two_pixels()
    weights = [1.0, 3.0]  # pixel 0 is class 1 (weight 3), pixel 1 is class 0 (weight 1)
    expected = (3.0 * -math.log(0.75) + 1.0 * -math.log(0.5)) / 4.0
    assert float(pixel_cross_entropy(labels, logits, weights)) == pytest.approx(expected, rel=1e-6)


def test_dice_matches_the_hand_computed_value():
    labels, logits = two_pixels()
    # class 0: p = (1/4, 1/2), y = (0, 1): intersection 1/2, sum p 3/4, sum y 1
    # class 1: p = (3/4, 1/2), y = (1, 0): intersection 3/4, sum p 5/4, sum y 1
    dice0 = (2 * 0.5) / (0.75 + 1.0)
    dice1 = (2 * 0.75) / (1.25 + 1.0)
    expected = 1.0 - (dice0 + dice1) / 2
    assert float(soft_dice_loss(labels, logits, smooth=0.0)) == pytest.approx(expected, rel=1e-6)
    smooth = 1.0
    dice0 = (1.0 + smooth) / (1.75 + smooth)
    dice1 = (1.5 + smooth) / (2.25 + smooth)
    weighted = 1.0 - (1.0 * dice0 + 3.0 * dice1) / 4.0
    assert float(soft_dice_loss(labels, logits, [1.0, 3.0], smooth=smooth)) == pytest.approx(weighted, rel=1e-6)


def test_a_confident_correct_prediction_has_nearly_zero_loss():
    labels = np.array([[[0, 1], [2, 1]]], np.uint8)
    logits = 20.0 * np.eye(3, dtype=np.float32)[labels]
    assert float(pixel_cross_entropy(labels, logits)) < 1e-6
    assert float(soft_dice_loss(labels, logits)) < 1e-6


@pytest.mark.parametrize("loss", [pixel_cross_entropy, soft_dice_loss, combined_segmentation_loss])
def test_ignored_pixels_do_not_change_the_loss(loss):
    labels, logits = two_pixels()
    base = float(loss(labels, logits))
    for ignored in ([0.0, 0.0], [50.0, -50.0], [-7.0, 300.0]):
        value = float(loss(*with_ignored_pixel(labels, logits, ignored)))
        assert value == pytest.approx(base, rel=1e-6)


def test_a_batch_with_only_ignored_pixels_has_zero_cross_entropy():
    labels = np.full((1, 2, 2), SEMANTIC_IGNORE, np.uint8)
    logits = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32)
    assert float(pixel_cross_entropy(labels, logits)) == 0.0
    # No valid pixel: every class has Dice smooth/smooth = 1, so the loss is 0 too.
    assert float(soft_dice_loss(labels, logits)) == pytest.approx(0.0, abs=1e-7)


def test_gradients_are_finite_and_zero_on_ignored_pixels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(2, 5, 5)).astype(np.uint8)
    labels[:, 0, :] = SEMANTIC_IGNORE
    logits = tf.Variable(rng.normal(scale=30.0, size=(2, 5, 5, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = combined_segmentation_loss(labels, logits, class_weights=[0.5, 1.0, 2.0, 1.0])
    gradient = tape.gradient(loss, logits).numpy()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(gradient))
    assert np.all(gradient[:, 0] == 0.0)
    assert np.any(gradient[:, 1:] != 0.0)


def test_keras_loss_is_the_weighted_sum_and_round_trips_its_config():
    labels, logits = two_pixels()
    loss = SegmentationLoss(cross_entropy_weight=0.5, dice_weight=2.0, class_weights=[1.0, 2.0])
    expected = 0.5 * float(pixel_cross_entropy(labels, logits, [1.0, 2.0])) \
        + 2.0 * float(soft_dice_loss(labels, logits, [1.0, 2.0]))
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-6)
    rebuilt = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(rebuilt, SegmentationLoss)
    assert rebuilt.get_config() == loss.get_config()
    assert float(rebuilt(labels, logits)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("arguments", [
    {"cross_entropy_weight": 0.0, "dice_weight": 0.0},
    {"dice_weight": -1.0},
    {"class_weights": [1.0, -2.0]},
    {"class_weights": []},
])
def test_bad_loss_arguments_are_refused(arguments):
    with pytest.raises(SegmentationLossError):
        SegmentationLoss(**arguments)


def test_class_weights_of_the_wrong_length_name_both_counts():
    labels, logits = two_pixels()
    with pytest.raises(SegmentationLossError, match="3 entries.*2 classes"):
        SegmentationLoss(class_weights=[1.0, 1.0, 1.0])(labels, logits)
