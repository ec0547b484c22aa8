"""RPN outputs -> region proposals: decode, clip, drop tiny boxes, top-k per level, NMS, top-k.

For each image (all in graph mode, static shapes):
1. per pyramid level, the `pre_nms_top_k` anchors with the highest objectness;
2. their deltas decoded against the anchors (`models.box_coding`), boxes clipped to the
   image, boxes narrower or lower than `min_size` pixels scored out;
3. NMS at `nms_iou` within each level (the level is NMS's "class", as in FPN
   implementations: large and small boxes do not suppress each other);
4. the best `post_nms_top_k` survivors over all levels.

Output rows past an image's `num_proposals` are zero-size boxes at the origin with
score 0: RoIAlign pools them harmlessly and RoI sampling never uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

from detseg.models.ops.box_coding import decode_center_size
from detseg.models.ops.box_ops import clip_boxes
from detseg.models.ops.nms import NmsConfig, batched_nms
from detseg.models.rcnn.rpn_targets import RPN_VARIANCES


@dataclass(frozen=True)
class ProposalConfig:
    """How many proposals survive each step (training and inference usually differ)."""

    pre_nms_top_k: int = 1000   # per level
    post_nms_top_k: int = 300   # per image
    nms_iou: float = 0.7
    min_size: float = 1.0       # px; smaller boxes are dropped

    def get_config(self) -> dict:
        return {"pre_nms_top_k": self.pre_nms_top_k, "post_nms_top_k": self.post_nms_top_k,
                "nms_iou": self.nms_iou, "min_size": self.min_size}


def _top_k_per_level(objectness: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor,
                     level_sizes: Sequence[int], k: int):
    """Top-`k` anchors of each level -> logits `[B, M]`, deltas `[B, M, 4]`, anchors `[B, M, 4]`,
    level index int32 `[M]`."""
    logits, picked_deltas, picked_anchors, levels = [], [], [], []
    start = 0
    for index, size in enumerate(level_sizes):
        level_logits = objectness[:, start:start + size]
        count = min(k, size)
        top_logits, top = tf.math.top_k(level_logits, k=count)
        logits.append(top_logits)
        picked_deltas.append(tf.gather(deltas[:, start:start + size], top, batch_dims=1))
        picked_anchors.append(tf.gather(anchors[start:start + size], top))
        levels.append(tf.fill([count], index))
        start += size
    return (tf.concat(logits, 1), tf.concat(picked_deltas, 1), tf.concat(picked_anchors, 1),
            tf.concat(levels, 0))


def generate_proposals(objectness: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor,
                       level_sizes: Sequence[int], image_size: tuple[int, int],
                       config: ProposalConfig, variances=RPN_VARIANCES) -> dict[str, tf.Tensor]:
    """Proposals from the RPN head's outputs.

    Args:
        objectness: float32 `[B, A]` logits; deltas: float32 `[B, A, 4]`.
        anchors: float32 `[A, 4]` xyxy px, level by level; `level_sizes[i]` anchors in level i.
        image_size: `(H, W)` of the input frame, for clipping.
    Returns `{"boxes": float32 [B, K, 4] xyxy px, "scores": float32 [B, K] objectness
    probabilities, "num_proposals": int32 [B]}`, `K = post_nms_top_k`, best first. No
    gradient flows through the proposals (they are sampling positions, not predictions).
    """
    objectness = tf.stop_gradient(tf.cast(objectness, tf.float32))
    deltas = tf.stop_gradient(tf.cast(deltas, tf.float32))
    anchors = tf.cast(anchors, tf.float32)
    logits, picked_deltas, picked_anchors, levels = _top_k_per_level(
        objectness, deltas, anchors, level_sizes, config.pre_nms_top_k)
    boxes = clip_boxes(decode_center_size(picked_deltas, picked_anchors, variances), image_size)
    widths, heights = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    big_enough = (widths >= config.min_size) & (heights >= config.min_size)
    scores = tf.where(big_enough, tf.sigmoid(logits), 0.0)
    # One score column per level: NMS never lets one level suppress another.
    per_level = scores[..., tf.newaxis] * tf.one_hot(levels, len(level_sizes))[tf.newaxis]
    nms = NmsConfig(iou_threshold=config.nms_iou, score_threshold=0.0,
                    max_detections=config.post_nms_top_k)
    kept = batched_nms(boxes, per_level, nms)
    # combined_non_max_suppression keeps zero scores; count only real, non-empty boxes.
    real = kept["scores"] > 0.0
    return {"boxes": tf.where(real[..., tf.newaxis], kept["boxes"], 0.0),
            "scores": tf.where(real, kept["scores"], 0.0),
            "num_proposals": tf.reduce_sum(tf.cast(real, tf.int32), axis=1)}
