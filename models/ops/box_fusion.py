"""Weighted box fusion (WBF, Solovyev et al. 2021) in TensorFlow, batched and exportable.

Several detectors' detections of one image are merged into fused detections: boxes of
the same class that overlap are averaged, each weighted by its confidence, instead of
all but one being thrown away as NMS does. The algorithm is that of the reference
implementation, `ensemble_boxes.weighted_boxes_fusion` (v1.0.9, `conf_type="avg"`,
`allows_overflow=False`), which `tests/models/test_box_fusion.py` checks it against:

1. A candidate is box `b_i` (xyxy), score `s_i`, class `c_i`, from a member of weight
   `w_i`; its confidence is `s_i * w_i`. Candidates with `s_i < skip_box_threshold`, a
   score of 0 (padding), class `PAD_CLASS` or zero area are dropped.
2. Candidates are visited in decreasing confidence. Each joins the fused box of its own
   class with the highest IoU if that IoU is > `iou_threshold` (strictly), else it starts
   a new cluster. A cluster's fused box is `sum(s w b) / sum(s w)` over its candidates,
   recomputed after each join (later candidates match against the fused box).
3. A cluster of `n` candidates scores `sum(s w) / n * min(T, n) / sum(weights)`, with `T`
   the number of members: a box all members found keeps its average score, a box one of
   T members found is scaled down by 1/T.
4. Fused detections are sorted by score, the best `max_detections` kept.

Unlike the reference (which wants coordinates in 0..1 and clips them), boxes are taken as
they are, in any frame (the letterbox frame's pixels here): IoU and the weighted means
do not depend on the scale. The loop over candidates (step 2 is sequential by nature)
runs as one `tf.while_loop` for the whole batch at once, so it exports and serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

from detseg.core.contract import PAD_CLASS
from detseg.models.ops.box_ops import box_area, elementwise_iou


class BoxFusionError(ValueError):
    """Weighted box fusion parameters out of range."""


@dataclass(frozen=True)
class BoxFusionConfig:
    """What `weighted_box_fusion` merges and keeps.

    - `iou_threshold`: a candidate joins a same-class fused box whose IoU with it exceeds this.
    - `skip_box_threshold`: candidates scoring below this are dropped first.
    - `max_detections`: K, fused detections kept per image; None keeps as many as the
      member with the most slots gives.
    """

    iou_threshold: float = 0.55
    skip_box_threshold: float = 0.0
    max_detections: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise BoxFusionError(f"iou_threshold must be in 0..1, got {self.iou_threshold}")
        if not 0.0 <= self.skip_box_threshold <= 1.0:
            raise BoxFusionError(f"skip_box_threshold must be in 0..1, got {self.skip_box_threshold}")
        if self.max_detections is not None and int(self.max_detections) < 1:
            raise BoxFusionError(f"max_detections must be >= 1 or None, got {self.max_detections}")

    def get_config(self) -> dict:
        return {"iou_threshold": self.iou_threshold, "skip_box_threshold": self.skip_box_threshold,
                "max_detections": self.max_detections}


def weighted_box_fusion(boxes, scores, classes, member_slots: Sequence[int],
                        member_weights: Sequence[float] | None = None,
                        config: BoxFusionConfig = BoxFusionConfig(), valid=None) -> dict[str, tf.Tensor]:
    """Fuse every member's detections of each image (module docstring).

    Args:
      boxes: float `[B, N, 4]` xyxy: the candidates of all members side by side, member
        t's in `member_slots[t]` consecutive slots (`sum(member_slots) == N`).
      scores: float `[B, N]` in 0..1.
      classes: int `[B, N]`, `PAD_CLASS` on padding rows.
      member_slots: how many slots each of the T members fills, in order.
      member_weights: T weights (default 1 each).
      config: thresholds and K (`BoxFusionConfig`).
      valid: optional bool `[B, N]`: False marks padding beyond a member's `num_detections`.

    Returns the padded detection dict of `models.ops.nms`, `K = config.max_detections`
    (default `max(member_slots)`): `boxes` float32 `[B, K, 4]`, `scores` `[B, K]`, `classes`
    int32 `[B, K]` (`PAD_CLASS` on padding), `num_detections` int32 `[B]`; and
    `fusion_weights` float32 `[B, K, N]`: each candidate's share (`s w / sum(s w)`) in each
    fused detection, rows summing to 1 (0 on padding), so callers fuse per-candidate data
    the same way (Mask R-CNN's masks: `einsum("bkn,bnhw->bkhw", fusion_weights, masks)`).
    """
    slots = [int(n) for n in member_slots]
    weights = [1.0] * len(slots) if member_weights is None else [float(w) for w in member_weights]
    if not slots or len(weights) != len(slots) or min(weights) <= 0:
        raise BoxFusionError(f"need one positive weight per member: {len(slots)} members, weights {weights}")
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    if boxes.shape[1] is not None and int(boxes.shape[1]) != sum(slots):
        raise BoxFusionError(f"the members fill {sum(slots)} slots ({slots}) but there are {boxes.shape[1]} boxes")
    candidate_weights = tf.repeat(tf.constant(weights, tf.float32), slots)  # [N]
    confidence = scores * candidate_weights[tf.newaxis, :]
    usable = ((classes > PAD_CLASS) & (scores > 0.0) & (scores >= config.skip_box_threshold)
              & (box_area(boxes) > 0.0))
    if valid is not None:
        usable &= tf.cast(valid, tf.bool)
    order = tf.argsort(tf.where(usable, confidence, -1.0), axis=1, direction="DESCENDING", stable=True)
    by_order = lambda t: tf.gather(t, order, batch_dims=1)  # noqa: E731
    sorted_cluster = _cluster_candidates(by_order(boxes), by_order(confidence), by_order(classes),
                                         by_order(usable), config.iou_threshold)
    # Back to the callers' candidate order: candidate order[b, j] went to sorted_cluster[b, j].
    cluster_of = tf.tensor_scatter_nd_update(tf.fill(tf.shape(classes), -1), _batch_indices(order),
                                             sorted_cluster)
    return _fused_detections(boxes, confidence, classes, cluster_of, len(slots), sum(weights),
                             int(config.max_detections or max(slots)))


def _batch_indices(order: tf.Tensor) -> tf.Tensor:
    """`[B, N]` positions -> `[B, N, 2]` (batch row, position) indices for scatter."""
    rows = tf.broadcast_to(tf.range(tf.shape(order)[0])[:, tf.newaxis], tf.shape(order))
    return tf.stack([rows, order], axis=-1)


def _cluster_candidates(boxes, confidence, classes, usable, iou_threshold: float) -> tf.Tensor:
    """Step 2 of the module docstring on candidates sorted by confidence: `[B, N]` cluster
    index of each candidate (clusters numbered from 0 per image in order of creation; -1 for
    dropped candidates)."""
    batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
    slots = tf.range(count)[tf.newaxis, :]

    def step(j, sum_confidence, sum_boxes, cluster_class, fused, num_clusters, cluster_of):
        box, conf, cls, use = boxes[:, j], confidence[:, j], classes[:, j], usable[:, j]
        iou = elementwise_iou(fused, box[:, tf.newaxis, :])
        iou = tf.where((slots < num_clusters[:, tf.newaxis]) & tf.equal(cluster_class, cls[:, tf.newaxis]),
                       iou, -1.0)
        matched = tf.reduce_max(iou, axis=1) > iou_threshold
        target = tf.where(matched, tf.argmax(iou, axis=1, output_type=tf.int32), num_clusters)
        joins = tf.equal(slots, target[:, tf.newaxis]) & use[:, tf.newaxis]  # [B, N]: at most one True
        added = tf.where(joins, conf[:, tf.newaxis], 0.0)
        sum_confidence += added
        sum_boxes += added[..., tf.newaxis] * box[:, tf.newaxis, :]
        fused = tf.where(joins[..., tf.newaxis],
                         tf.math.divide_no_nan(sum_boxes, sum_confidence[..., tf.newaxis]), fused)
        cluster_class = tf.where(joins, cls[:, tf.newaxis], cluster_class)
        num_clusters += tf.cast(use & ~matched, tf.int32)
        cluster_of = tf.where(tf.equal(slots, j), tf.where(use, target, -1)[:, tf.newaxis], cluster_of)
        return j + 1, sum_confidence, sum_boxes, cluster_class, fused, num_clusters, cluster_of

    zeros = tf.zeros([batch, count], tf.float32)
    state = (tf.constant(0), zeros, tf.zeros([batch, count, 4]), tf.fill([batch, count], PAD_CLASS),
             tf.zeros([batch, count, 4]), tf.zeros([batch], tf.int32), tf.fill([batch, count], -1))
    return tf.while_loop(lambda j, *_: j < count, step, state)[-1]


def _fused_detections(boxes, confidence, classes, cluster_of, member_count: int, total_weight: float,
                      max_detections: int) -> dict[str, tf.Tensor]:
    """Steps 3-4: clusters (`cluster_of [B, N]`, -1 = dropped) -> the padded detection dict."""
    num_candidates = tf.shape(boxes)[1]
    # membership[b, c, n]: candidate n's confidence if it is in cluster c.
    membership = tf.one_hot(cluster_of, num_candidates, axis=1) * confidence[:, tf.newaxis, :]
    sum_confidence = tf.reduce_sum(membership, axis=2)  # [B, C]
    size = tf.reduce_sum(tf.one_hot(cluster_of, num_candidates, axis=1), axis=2)
    fused_boxes = tf.math.divide_no_nan(tf.einsum("bcn,bnk->bck", membership, boxes),
                                        sum_confidence[..., tf.newaxis])
    score = (tf.math.divide_no_nan(sum_confidence, size) * tf.minimum(float(member_count), size)
             / total_weight)
    exists = size > 0
    cluster_class = tf.reduce_max(tf.where(tf.one_hot(cluster_of, num_candidates, axis=1) > 0,
                                           classes[:, tf.newaxis, :], PAD_CLASS), axis=2)
    k = min(max_detections, int(boxes.shape[1]))
    top_scores, top = tf.math.top_k(tf.where(exists, score, -1.0), k=k)
    real = top_scores >= 0.0
    pick = lambda t: tf.gather(t, top, batch_dims=1)  # noqa: E731
    shares = tf.math.divide_no_nan(pick(membership), pick(sum_confidence)[..., tf.newaxis])
    outputs = {
        "boxes": tf.where(real[..., tf.newaxis], pick(fused_boxes), 0.0),
        "scores": tf.where(real, top_scores, 0.0),
        "classes": tf.where(real, pick(cluster_class), PAD_CLASS),
        "num_detections": tf.reduce_sum(tf.cast(real, tf.int32), axis=1),
        "fusion_weights": tf.where(real[..., tf.newaxis], shares, 0.0),
    }
    if k < max_detections:  # fewer candidates than slots: pad to K, as NMS outputs are
        pad = max_detections - k
        outputs = {name: _pad_slots(value, pad, PAD_CLASS if name == "classes" else 0)
                   for name, value in outputs.items()}
    return outputs


def _pad_slots(value: tf.Tensor, pad: int, fill) -> tf.Tensor:
    if value.shape.rank == 1:  # num_detections
        return value
    paddings = [[0, 0], [0, pad]] + [[0, 0]] * (value.shape.rank - 2)
    return tf.pad(value, paddings, constant_values=fill)
