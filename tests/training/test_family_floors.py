"""Families through `train()` on their smoke configs learn something: the headline metric of
the session's smoke run (tests/conftest.py) clears a floor on the easy synthetic shapes.

The floors sit well above what an untrained model scores (about 0 AP, chance accuracy, the
background-only IoU) and well below what the deterministic smoke runs reach on this CPU,
so a loss, target or decoding bug that stops learning fails here, while a small change
of numerics does not. They cost nothing extra: the runs are shared with the other tests.
"""

from __future__ import annotations

import pytest

from detseg.training.families import FAMILIES

pytestmark = pytest.mark.slow  # the shared smoke runs

# family -> (metric, floor). The smoke runs' values on this CPU (2 cores) are in the comments.
# Not yet here: clsloc (accuracy 1/3 = chance, localization accuracy 0 on its 6 val images)
# and fcn (mean IoU 0.19, about what "all background" scores) learn nothing measurable in
# their smoke runs; ssd, faster_rcnn, mask_rcnn and unet have no shared run yet.
FLOORS = {
    "yolo": ("bbox_AP50", 0.005),  # 0.0098 since passes are (seed, pass) functions (0.044 before); untrained: 0
}


@pytest.mark.parametrize("family", sorted(FLOORS))
def test_smoke_run_clears_its_floor(family, smoke_run):
    result = smoke_run(family).result
    metric, floor = FLOORS[family]
    value = result.metrics[metric]
    assert result.headline_metric == FAMILIES[family].headline_metric
    assert value is not None and value > floor, f"{family}: {metric} = {value}, floor {floor}"
