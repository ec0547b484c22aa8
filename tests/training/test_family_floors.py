"""Families through `train()` on their smoke configs learn something: the headline metric of
the session's smoke run (tests/conftest.py) clears a floor on easy synthetic shapes.

The floors sit well above what an untrained model scores (about 0 AP, the all-background
mean IoU) and well below what the deterministic smoke runs reach on this CPU, so a loss,
target or decoding bug that stops learning fails here, while a small change of numerics
does not. They cost little: the runs are shared with the other tests (only `clsloc_imagenet`
is trained for its floor alone).

Faults seen to fail these floors (injected once, then reverted): YOLO's box and DFL losses
weighted by 0 (AP50 0.14 against the floor 0.3); each image's labels rolled to its batch
neighbour in the segmentation loss (FCN mean IoU 0.217 against 0.301).
"""

from __future__ import annotations

import pytest

from detseg.training.families import FAMILIES

pytestmark = pytest.mark.slow  # the shared smoke runs

# The mean IoU of a segmenter that predicts background everywhere on the shared easy val
# split (background + 3 shapes): where U-Net and FCN sat on the random `tiny` backbone.
ALL_BACKGROUND_MEAN_IOU = 0.211

# smoke run -> (family, metric, floor). In the comments, the deterministic runs' values on
# this CPU (2 cores) and what an untrained model scores.
FLOORS = {
    "clsloc_imagenet": ("clsloc", "localization_accuracy", 0.1),  # 0.286 (2 of 7); untrained: 0
    "yolo": ("yolo", "bbox_AP50", 0.3),  # 0.597; untrained: 0
    "ssd": ("ssd", "bbox_AP50", 0.1),  # 0.229; untrained: 0
    "faster_rcnn": ("faster_rcnn", "bbox_AP50", 0.15),  # 0.320; untrained: 0
    "mask_rcnn": ("mask_rcnn", "segm_AP50", 0.15),  # 0.378 (bbox_AP50 0.248); untrained: 0
    "fcn": ("fcn", "mean_iou", ALL_BACKGROUND_MEAN_IOU + 0.09),  # 0.415
    "unet": ("unet", "mean_iou", ALL_BACKGROUND_MEAN_IOU + 0.05),  # 0.348
}


@pytest.mark.parametrize("run", sorted(FLOORS))
def test_smoke_run_clears_its_floor(run, smoke_run):
    result = smoke_run(run).result
    family, metric, floor = FLOORS[run]
    value = result.metrics[metric]
    assert result.headline_metric == FAMILIES[family].headline_metric
    assert value is not None and value > floor, f"{family}: {metric} = {value}, floor {floor}"
