"""Shared fixtures: one small synthetic dataset and one smoke run per family, per test session.

48 images of 128 px (seed 0) are made once by `data.synthetic.ensure_synthetic` and
shared read-only by every test that needs real files; tests that write copy first.

`smoke_run(family)` trains `configs/smoke/<family>.yaml` (with `SMOKE_RUN_OVERRIDES`)
through `training.trainer.train` the first time a test asks for that family, and hands
every later caller the same finished run: tracing the train steps is most of a smoke
run's cost, so the training, export, serving and evaluation tests share one run per
family instead of each training its own. The runs are read-only: a test that must write
into a run directory copies it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from detseg.data.coco import CocoDataset, load_coco
from detseg.data.synthetic import ensure_synthetic

SYNTHETIC_NUM_IMAGES = 48
SYNTHETIC_IMAGE_SIZE = 128
SYNTHETIC_SEED = 0

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIGS = REPO / "configs" / "smoke"
# What the shared runs change in the smoke configs. cls+loc: four short fine-tuning epochs
# (batches of 4) with the real metric logged each epoch, so the resume test can kill a
# `detseg train` of the very same config inside stage 2 and compare the outcome with this
# uninterrupted run. Stage 1 runs on cached features: its epochs cost little next to
# tracing, and more of them lift YOLO's AP clear of its floor (test_family_floors.py).
SMOKE_RUN_OVERRIDES: dict[str, tuple[str, ...]] = {
    "clsloc": ("stage1.epochs=2", "stage2.epochs=4", "stage2.batch_size=4", "eval.every=1"),
    "yolo": ("stage1.epochs=8", "stage2.epochs=1"),
    "ssd": ("stage1.epochs=8", "stage2.epochs=1"),
    "faster_rcnn": ("stage1.epochs=8", "stage2.epochs=1"),
    "mask_rcnn": ("stage1.epochs=8", "stage2.epochs=1"),
    "fcn": ("stage1.epochs=1",),
    "unet": ("stage1.epochs=1",),
}


class SmokeRun(NamedTuple):
    """A finished smoke run: its `TrainConfig`, `TrainResult` and the overrides (all but `runs_dir`)."""

    config: object
    result: object
    overrides: tuple[str, ...]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the session's synthetic dataset (images/, masks/, annotations/)."""
    root = tmp_path_factory.mktemp("synthetic") / "shapes"
    ensure_synthetic(root, num_images=SYNTHETIC_NUM_IMAGES, image_size=SYNTHETIC_IMAGE_SIZE,
                     seed=SYNTHETIC_SEED)
    return root


@pytest.fixture(scope="session")
def synthetic_train(synthetic_dir: Path) -> CocoDataset:
    """The train split of the session's synthetic dataset, loaded with `load_coco`."""
    return load_coco(synthetic_dir / "annotations" / "instances_train.json")


@pytest.fixture(scope="session")
def smoke_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`runs_dir` of the shared smoke runs (`<it>/smoke_<family>/`, `<it>/synthetic/`)."""
    return tmp_path_factory.mktemp("smoke_runs")


@pytest.fixture(scope="session")
def smoke_run(smoke_runs_dir: Path) -> Callable[[str], SmokeRun]:
    """`smoke_run(family) -> SmokeRun`: the family's smoke config trained once per session."""
    from detseg.training.config import load_config
    from detseg.training.trainer import train

    finished: dict[str, SmokeRun] = {}

    def run(family: str) -> SmokeRun:
        if family not in finished:
            overrides = SMOKE_RUN_OVERRIDES[family]
            config = load_config(SMOKE_CONFIGS / f"{family}.yaml", [f"runs_dir={smoke_runs_dir}", *overrides])
            finished[family] = SmokeRun(config, train(config, verbose=0, log=lambda message: None), overrides)
        return finished[family]

    return run
