"""Decoders with known answers: raw outputs written by hand decode to the boxes they encode.

Each case builds the raw outputs a head would give for a known object: the box's
distances (YOLO: distribution-focal bins around a grid point) or deltas (Faster R-CNN:
against an anchor, then against a RoI) at a known row, and a confident class there;
every other row says "nothing". The expected boxes, rows and scores are computed here by
hand from the layout the docstrings promise (level, row, column; cell centres at
`(i + 0.5) * stride`; anchors per cell in scale-then-ratio order), never by the library's
own encoders, so a wrong point order, stride, offset, variance or class column fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import PAD_CLASS
from detseg.models.necks.fpn import FeaturePyramid
from detseg.models.ops.nms import NmsConfig
from detseg.models.rcnn.box_head import BoxHead
from detseg.models.rcnn.detections import detect_objects
from detseg.models.rcnn.faster_rcnn import FasterRCNN
from detseg.models.rcnn.options import TwoStageOptions
from detseg.models.rcnn.rpn_head import RPNHead
from detseg.models.rcnn.rpn_proposals import generate_proposals
from detseg.models.yolo.detector import YoloDetector
from detseg.models.yolo.head import YoloHeadConfig, build_yolo_network

SIZE = 64
NUM_CLASSES = 3
CONFIDENT, NOTHING = 12.0, -30.0  # logits: sigmoid 0.999994 / 9e-14


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------- YOLO

REG_MAX = 8
YOLO_CONFIG = YoloHeadConfig(neck_widths=(8, 8, 8), neck_depth=0, reg_max=REG_MAX, score_threshold=0.05,
                             iou_threshold=0.5, max_detections=5)
# 64 px: P3 is 8x8 cells (rows 0..63), P4 4x4 (64..79), P5 2x2 (80..83).
P3_ROWS, P4_ROWS = 64, 16


@pytest.fixture(scope="module")
def yolo() -> YoloDetector:
    """A features-in YOLO at 64 px (no backbone: only the priors and the decoder matter here)."""
    shapes = {"P3": (8, 8, 8), "P4": (4, 4, 8), "P5": (2, 2, 8)}
    return YoloDetector(None, build_yolo_network(shapes, NUM_CLASSES, YOLO_CONFIG), YOLO_CONFIG,
                        image_size=(SIZE, SIZE))


def dfl_logits(distances_in_strides) -> np.ndarray:
    """`[4 * REG_MAX]` logits whose softmax expectation is each side's distance.

    A whole distance d is one confident bin; d + 0.5 is two equal bins (d and d + 1).
    """
    logits = np.full((4, REG_MAX), NOTHING, np.float32)
    for side, distance in enumerate(distances_in_strides):
        low = int(math.floor(distance))
        logits[side, low] = CONFIDENT
        if distance != low:
            assert distance - low == 0.5
            logits[side, low + 1] = CONFIDENT
    return logits.reshape(-1)


def yolo_raw(objects: list[tuple[int, tuple, int, float]], images: int = 1) -> dict[str, tf.Tensor]:
    """Raw outputs `[images, 84, ...]` with `(row, ltrb distances in strides, class, logit)` in image 0."""
    rows = 8 * 8 + 4 * 4 + 2 * 2
    boxes = np.tile(dfl_logits((0, 0, 0, 0)), (images, rows, 1))
    classes = np.full((images, rows, NUM_CLASSES), NOTHING, np.float32)
    for row, distances, class_index, logit in objects:
        boxes[0, row] = dfl_logits(distances)
        classes[0, row, class_index] = logit
    return {"box_distribution": tf.constant(boxes), "class_logits": tf.constant(classes)}


def test_yolo_decodes_a_known_box_at_a_known_grid_point_and_class(yolo):
    # P4 (stride 16), cell row 1, column 2: centre (x, y) = (2.5 * 16, 1.5 * 16) = (40, 24).
    p4_row = P3_ROWS + 1 * 4 + 2
    # l, t, r, b = 1, 0.5, 1, 1.5 strides -> x0 = 40 - 16, y0 = 24 - 8, x1 = 40 + 16, y1 = 24 + 24.
    p4_box = [24.0, 16.0, 56.0, 48.0]
    # P3 (stride 8), cell row 6, column 1: centre (12, 52); l, t, r, b = 1, 0.5, 1, 1 strides.
    p3_row = 6 * 8 + 1
    p3_box = [4.0, 48.0, 20.0, 60.0]
    raw = yolo_raw([(p4_row, (1, 0.5, 1, 1.5), 2, CONFIDENT), (p3_row, (1, 0.5, 1, 1), 0, 3.0)], images=2)

    out = {name: value.numpy() for name, value in yolo.decode(raw).items()}
    assert out["num_detections"].tolist() == [2, 0]  # the second image says "nothing" everywhere
    np.testing.assert_allclose(out["boxes"][0, :2], [p4_box, p3_box], atol=1e-4)
    assert out["classes"][0, :2].tolist() == [2, 0] and np.all(out["classes"][0, 2:] == PAD_CLASS)
    np.testing.assert_allclose(out["scores"][0, :2], [sigmoid(CONFIDENT), sigmoid(3.0)], rtol=1e-5)
    assert np.all(out["classes"][1] == PAD_CLASS) and not out["boxes"][1].any()


def test_yolo_decoded_boxes_are_clipped_to_the_frame(yolo):
    # P5 (stride 32), cell row 1, column 1: centre (48, 48); 2 strides right/down reach 112 -> 64.
    raw = yolo_raw([(P3_ROWS + P4_ROWS + 3, (1, 1, 2, 2), 1, CONFIDENT)])
    out = yolo.decode(raw)
    assert int(out["num_detections"][0]) == 1 and int(out["classes"][0, 0]) == 1
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), [16.0, 16.0, 64.0, 64.0], atol=1e-4)


# ---------------------------------------------------------------------------- Faster R-CNN

RCNN_OPTIONS = TwoStageOptions.from_dict({
    "anchor_sizes": (16.0, 32.0), "anchor_scales": (1.0,), "anchor_ratios": (0.5, 1.0, 2.0),
    "test_proposals": {"pre_nms_top_k": 50, "post_nms_top_k": 10, "nms_iou": 0.7, "min_size": 1.0},
    "nms": {"iou_threshold": 0.5, "score_threshold": 0.05, "max_detections": 5},
})


@pytest.fixture(scope="module")
def faster_rcnn() -> FasterRCNN:
    """A features-in Faster R-CNN on P3, P4 at 64 px: its anchors are what the decoders read."""
    levels = ("P3", "P4")
    return FasterRCNN(None, FeaturePyramid(levels, 8), RPNHead(levels, 3, 8), BoxHead(NUM_CLASSES, 8),
                      image_size=(SIZE, SIZE), options=RCNN_OPTIONS)


def test_rpn_deltas_at_a_known_anchor_decode_to_the_known_proposal(faster_rcnn):
    # P3 (stride 8), cell row 2, column 3, third anchor of the cell (ratio 2: 16*sqrt2 x 16/sqrt2).
    row = (2 * 8 + 3) * 3 + 2
    centre_x, centre_y, width, height = 3.5 * 8, 2.5 * 8, 16 * math.sqrt(2), 16 / math.sqrt(2)
    np.testing.assert_allclose(faster_rcnn.anchors[row], [centre_x - width / 2, centre_y - height / 2,
                                                          centre_x + width / 2, centre_y + height / 2], atol=1e-4)
    # Wanted proposal [14, 8, 46, 40]: centre (30, 24), 32 x 32. RPN variances are 1.
    deltas = np.zeros((1, len(faster_rcnn.anchors), 4), np.float32)
    deltas[0, row] = [(30 - centre_x) / width, (24 - centre_y) / height, math.log(32 / width),
                      math.log(32 / height)]
    objectness = np.full((1, len(faster_rcnn.anchors)), NOTHING, np.float32)
    objectness[0, row] = 4.0
    proposals = generate_proposals(tf.constant(objectness), tf.constant(deltas), faster_rcnn.anchors,
                                   faster_rcnn.level_anchor_counts, faster_rcnn.image_size,
                                   RCNN_OPTIONS.test_proposals)
    np.testing.assert_allclose(proposals["boxes"][0, 0].numpy(), [14.0, 8.0, 46.0, 40.0], atol=1e-4)
    assert float(proposals["scores"][0, 0]) == pytest.approx(sigmoid(4.0), rel=1e-6)
    assert float(proposals["scores"][0, 1]) < 1e-6  # every other anchor said "nothing"


def test_box_head_deltas_of_the_winning_class_decode_to_the_known_detection():
    rois = np.array([[[10, 10, 30, 50],     # RoI 0: class 1, refined by class 1's deltas
                      [40, 40, 60, 60],     # RoI 1: background wins, no detection
                      [0, 0, 0, 0]]],       # padding row (zero size): never a detection
                    np.float32)
    logits = np.full((1, 3, NUM_CLASSES + 1), -10.0, np.float32)
    logits[0, 0, [1, NUM_CLASSES]] = [6.0, 0.0]  # background is the last column
    logits[0, 1, NUM_CLASSES] = 8.0
    logits[0, 2, 2] = 20.0
    deltas = np.full((1, 3, NUM_CLASSES, 4), 3.0, np.float32)  # wrong classes' deltas: far off
    # RoI 0 is centre (20, 30), 20 x 40; the wanted box [12, 14, 36, 54] is centre (24, 34), 24 x 40.
    # Faster R-CNN variances (0.1, 0.1, 0.2, 0.2) divide the deltas.
    deltas[0, 0, 1] = [(24 - 20) / 20 / 0.1, (34 - 30) / 40 / 0.1, math.log(24 / 20) / 0.2, 0.0]
    out = detect_objects(tf.constant(rois), tf.constant(logits), tf.constant(deltas), (SIZE, SIZE),
                         NmsConfig(0.5, 0.05, 5))
    assert int(out["num_detections"][0]) == 1
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), [12.0, 14.0, 36.0, 54.0], atol=1e-4)
    assert int(out["classes"][0, 0]) == 1 and np.all(out["classes"][0, 1:].numpy() == PAD_CLASS)
    softmax = math.exp(6.0) / (math.exp(6.0) + math.exp(0.0) + 2 * math.exp(-10.0))
    assert float(out["scores"][0, 0]) == pytest.approx(softmax, rel=1e-5)
