"""Shared fixtures: one small synthetic dataset per test session.

48 images of 128 px (seed 0) are made once by `data.synthetic.ensure_synthetic` and
shared read-only by every test that needs real files; tests that write copy first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detseg.data.coco import CocoDataset, load_coco
from detseg.data.synthetic import ensure_synthetic

SYNTHETIC_NUM_IMAGES = 48
SYNTHETIC_IMAGE_SIZE = 128
SYNTHETIC_SEED = 0


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
