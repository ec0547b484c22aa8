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

import contextlib
import fcntl
import os
import pickle
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
# tracing, and `min_steps_per_epoch` gives the heads enough steps to learn.
# The runs test_family_floors.py holds above a floor start from ImageNet EfficientNet-Lite0
# (offline, from the `detseg[weights]` packages) on an easy variant of the smoke data (at
# most two shapes per image, each at least 30% of the side): on the random `tiny` backbone
# none of them learns anything measurable in a smoke run's budget (mIoU stays at "all
# background", AP near 0). The two-stage detectors need 48 images (24 gave AP50 0.04) and a
# stage 2 that unfreezes one block (all blocks at lr 1e-3 undid stage 1: AP50 0.35 -> 0.03).
# The cls+loc run the resume and run-directory tests share keeps the `tiny` backbone (their
# layer names); `clsloc_imagenet` is the same config on ImageNet features, for its floor.
EASY_SHAPES = ("data.synthetic.max_shapes=2", "data.synthetic.min_shape_size=0.3")
IMAGENET_LITE0 = ("model.backbone=efficientnet_lite0", "model.weights=imagenet")
TWO_STAGE = (*EASY_SHAPES, *IMAGENET_LITE0, "data.synthetic.num_images=48", "stage1.epochs=8",
             "stage1.min_steps_per_epoch=8", "stage2.epochs=1", "stage2.unfreeze=1")
SMOKE_RUN_OVERRIDES: dict[str, tuple[str, ...]] = {
    "clsloc": ("stage1.epochs=2", "stage2.epochs=4", "stage2.batch_size=4", "eval.every=1"),
    "clsloc_imagenet": ("name=smoke_clsloc_imagenet", "data.synthetic.max_shapes=1", "data.synthetic.min_shape_size=0.3",
                        *IMAGENET_LITE0, "data.synthetic.num_images=48", "stage1.epochs=8",
                        "stage1.min_steps_per_epoch=16", "stage2.epochs=3", "stage2.min_steps_per_epoch=16"),
    "yolo": (*EASY_SHAPES, *IMAGENET_LITE0, "stage1.epochs=8", "stage1.min_steps_per_epoch=16", "stage2.epochs=1"),
    "ssd": (*EASY_SHAPES, *IMAGENET_LITE0, "stage1.epochs=8", "stage1.min_steps_per_epoch=16", "stage2.epochs=1"),
    "faster_rcnn": TWO_STAGE,
    "mask_rcnn": TWO_STAGE,
    "fcn": (*EASY_SHAPES, *IMAGENET_LITE0, "stage1.epochs=6", "stage1.min_steps_per_epoch=30", "stage1.lr=0.01"),
    "unet": (*EASY_SHAPES, *IMAGENET_LITE0, "stage1.epochs=6", "stage1.min_steps_per_epoch=30", "stage1.lr=0.01"),
}
# A run's config file when it is not `configs/smoke/<run>.yaml`.
SMOKE_RUN_CONFIG = {"clsloc_imagenet": "clsloc"}


class SmokeRun(NamedTuple):
    """A finished smoke run: its `TrainConfig`, `TrainResult` and the overrides (all but `runs_dir`)."""

    config: object
    result: object
    overrides: tuple[str, ...]


def pytest_collection_modifyitems(config, items):
    """Files with the most `slow` tests run first (each file's own order kept).

    `make test` hands whole files to two xdist workers in collection order (`--dist
    loadfile --no-loadscope-reorder`); a heavy file that starts last leaves one worker
    running it alone while the other has nothing left. Heavy work first, light files
    filling the gaps at the end, keeps both busy.
    """
    slow_counts: dict = {}
    for item in items:
        slow_counts[item.path] = slow_counts.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_counts[item.path])  # stable: files stay contiguous


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
    """`runs_dir` of the shared smoke runs (`<it>/smoke_<family>/`, `<it>/synthetic/`).

    Under pytest-xdist every worker gets the same folder (beside the workers' own base
    temporary folders), so a run one worker trained serves the others too.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "smoke_runs"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("smoke_runs")


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Holds an exclusive `flock` on `lock_path`, across xdist workers: one per smoke run (the
    first worker trains it, the others wait and load it), and one around making the synthetic
    folders several runs share, so two workers train different runs at the same time."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def smoke_run(smoke_runs_dir: Path) -> Callable[[str], SmokeRun]:
    """`smoke_run(family) -> SmokeRun`: the family's smoke config trained once per session
    (once for all xdist workers: the first to ask trains it, the others load its pickled result)."""
    from detseg.training.config import load_config
    from detseg.training.trainer import train
    from detseg.training.training_data import resolve_training_data

    finished: dict[str, SmokeRun] = {}

    def run(family: str) -> SmokeRun:
        if family not in finished:
            done = smoke_runs_dir / f"smoke_{family}.finished.pickle"
            with _exclusive(smoke_runs_dir / f"smoke_{family}.lock"):
                if done.exists():  # trained by another xdist worker of this session
                    finished[family] = SmokeRun(*pickle.loads(done.read_bytes()))
                else:
                    overrides = SMOKE_RUN_OVERRIDES[family]
                    config_file = SMOKE_CONFIGS / f"{SMOKE_RUN_CONFIG.get(family, family)}.yaml"
                    config = load_config(config_file, [f"runs_dir={smoke_runs_dir}", *overrides])
                    with _exclusive(smoke_runs_dir / "synthetic.lock"):  # runs share synthetic folders
                        resolve_training_data(config)
                    finished[family] = SmokeRun(config, train(config, verbose=0, log=lambda message: None), overrides)
                    # a plain tuple: pickle cannot find `conftest.SmokeRun` by name in another worker
                    done.write_bytes(pickle.dumps(tuple(finished[family])))
        return finished[family]

    return run
