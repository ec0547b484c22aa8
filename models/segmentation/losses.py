"""Losses for semantic segmentation: pixel cross-entropy, soft Dice, and their weighted sum.

Every function takes
- `labels`: integer `[B, H, W]` (uint8 in the batch contract): channel index `0..C-1`
  of the true class (0 = background; contiguous class `i` is `i + 1`), or `SEMANTIC_IGNORE`
  (255) for pixels that must not count (borders exposed by augmentation, crowds);
- `logits`: float `[B, H, W, C]`, unnormalised scores, `C` including the background;
- optional `class_weights`: `C` non-negative floats, for imbalanced classes,

and returns a float32 scalar. Ignored pixels contribute nothing: neither their value nor
their gradient (changing their logits leaves the loss unchanged). Any other label
outside `0..C-1` is a caller error (the gather fails on CPU).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from detseg.core.contract import SEMANTIC_IGNORE

DEFAULT_DICE_SMOOTH = 1.0


class SegmentationLossError(ValueError):
    """A segmentation loss was configured with bad weights; the message names the argument."""


def _valid_pixels(labels, ignore_label: int):
    """`(valid float32 [B, H, W], safe int32 [B, H, W])`: ignored pixels read as class 0 in `safe`."""
    labels = ops.cast(labels, "int32")
    valid = ops.not_equal(labels, ignore_label)
    return ops.cast(valid, "float32"), ops.where(valid, labels, ops.zeros_like(labels))


def _weight_vector(class_weights, num_classes: int):
    if class_weights is None:
        return ops.ones((num_classes,), "float32")
    return ops.convert_to_tensor(class_weights, "float32")


def pixel_cross_entropy(labels, logits, class_weights: Sequence[float] | None = None,
                        ignore_label: int = SEMANTIC_IGNORE):
    """Mean softmax cross-entropy over the non-ignored pixels of the batch.

    With class weights `w`, each pixel's term is scaled by `w[its true class]` and the sum
    is divided by the sum of those weights (so uniform weights give the plain mean, as in
    PyTorch's `CrossEntropyLoss(weight=...)`). A batch with no valid pixel gives 0.
    """
    logits = ops.cast(logits, "float32")
    valid, safe = _valid_pixels(labels, ignore_label)
    log_probs = ops.log_softmax(logits, axis=-1)
    true_log_prob = ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(safe, -1), axis=-1), -1)
    pixel_weight = ops.take(_weight_vector(class_weights, logits.shape[-1]), safe) * valid
    total = ops.sum(-true_log_prob * pixel_weight)
    return ops.divide_no_nan(total, ops.sum(pixel_weight))


def soft_dice_loss(labels, logits, class_weights: Sequence[float] | None = None,
                   ignore_label: int = SEMANTIC_IGNORE, smooth: float = DEFAULT_DICE_SMOOTH):
    """`1 - mean_c Dice_c` with softmax probabilities, over the whole batch's valid pixels.

    `Dice_c = (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)`, sums over
    every non-ignored pixel of the batch (`y_c` the one-hot truth). `smooth` keeps a class
    absent from both truth and prediction at Dice 1 instead of 0/0. Class weights turn
    the mean over classes into a weighted mean.
    """
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    valid, safe = _valid_pixels(labels, ignore_label)
    probabilities = ops.softmax(logits, axis=-1) * valid[..., None]
    truth = ops.one_hot(safe, num_classes, dtype="float32") * valid[..., None]
    pixel_axes = tuple(range(len(logits.shape) - 1))
    intersection = ops.sum(probabilities * truth, axis=pixel_axes)
    denominator = ops.sum(probabilities, axis=pixel_axes) + ops.sum(truth, axis=pixel_axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    weights = _weight_vector(class_weights, num_classes)
    return 1.0 - ops.sum(dice * weights) / ops.sum(weights)


def combined_segmentation_loss(labels, logits, cross_entropy_weight: float = 1.0,
                               dice_weight: float = 1.0,
                               class_weights: Sequence[float] | None = None,
                               ignore_label: int = SEMANTIC_IGNORE, smooth: float = DEFAULT_DICE_SMOOTH):
    """`cross_entropy_weight * pixel_cross_entropy + dice_weight * soft_dice_loss`."""
    total = ops.zeros((), "float32")
    if cross_entropy_weight:
        total += cross_entropy_weight * pixel_cross_entropy(labels, logits, class_weights, ignore_label)
    if dice_weight:
        total += dice_weight * soft_dice_loss(labels, logits, class_weights, ignore_label, smooth)
    return total


def _checked_class_weights(class_weights) -> list[float] | None:
    if class_weights is None:
        return None
    weights = [float(w) for w in class_weights]
    if not weights or min(weights) < 0 or sum(weights) <= 0:
        raise SegmentationLossError(
            f"class_weights must be non-negative numbers, not all zero, got {list(class_weights)}")
    return weights


@keras.saving.register_keras_serializable(package="detseg")
class SegmentationLoss(keras.losses.Loss):
    """Keras loss `(labels [B, H, W], logits [B, H, W, C]) -> scalar`: CE + Dice, 255 ignored.

    Args:
        cross_entropy_weight, dice_weight: weights of the two terms (either may be 0).
        class_weights: optional `C` per-class weights, applied to both terms.
        ignore_label: label value that counts nowhere (default 255).
        smooth: Dice smoothing constant.

    The batch is reduced as a whole (one Dice over all its pixels, one CE mean), so Keras'
    `sample_weight` is not supported. Under a distribution strategy each replica's loss is
    the mean over its own pixels.
    """

    def __init__(self, cross_entropy_weight: float = 1.0, dice_weight: float = 1.0,
                 class_weights: Sequence[float] | None = None, ignore_label: int = SEMANTIC_IGNORE,
                 smooth: float = DEFAULT_DICE_SMOOTH, name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if cross_entropy_weight < 0 or dice_weight < 0 or cross_entropy_weight + dice_weight <= 0:
            raise SegmentationLossError(
                f"cross_entropy_weight and dice_weight must be >= 0 and not both 0, got "
                f"{cross_entropy_weight} and {dice_weight}")
        self.cross_entropy_weight = float(cross_entropy_weight)
        self.dice_weight = float(dice_weight)
        self.class_weights = _checked_class_weights(class_weights)
        self.ignore_label = int(ignore_label)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        if self.class_weights is not None and len(self.class_weights) != y_pred.shape[-1]:
            raise SegmentationLossError(
                f"class_weights has {len(self.class_weights)} entries, the logits have "
                f"{y_pred.shape[-1]} classes")
        return combined_segmentation_loss(y_true, y_pred, self.cross_entropy_weight, self.dice_weight,
                                          self.class_weights, self.ignore_label, self.smooth)

    def get_config(self):
        return {**super().get_config(), "cross_entropy_weight": self.cross_entropy_weight,
                "dice_weight": self.dice_weight, "class_weights": self.class_weights,
                "ignore_label": self.ignore_label, "smooth": self.smooth}
