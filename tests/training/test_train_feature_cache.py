"""Stage-1 bottleneck features: cached on disk, reused while unchanged, recomputed on change."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from detseg.training.config import load_config
from detseg.training.families import FAMILIES
from detseg.training.feature_cache import FeatureCache, cache_key
from detseg.training.run_directory import RunDirectory
from detseg.training.training_data import resolve_training_data
from detseg.training.transfer_stages import TrainingSession, bottleneck_features, build_backbone_for

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"


@pytest.fixture()
def dataset_copy(synthetic_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's synthetic dataset (tests here modify files)."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "shapes"))


def session_for(dataset_dir: Path, tmp_path: Path, *overrides: str) -> TrainingSession:
    annotations = dataset_dir / "annotations"
    config = load_config(SMOKE, ["data.synthetic=null", f"data.train={annotations / 'instances_train.json'}",
                                 f"data.val={annotations / 'instances_val.json'}", f"runs_dir={tmp_path / 'runs'}",
                                 f"stage1.cache_dir={tmp_path / 'cache'}", *overrides])
    return TrainingSession(config, FAMILIES[config.model.family], resolve_training_data(config),
                           RunDirectory(config.run_dir), tf.distribute.get_strategy(), Messages(), 0)


class Messages(list):
    """A `log` callable that keeps what it was told."""

    def __call__(self, message: str) -> None:
        self.append(message)


def features(session: TrainingSession):
    backbone = build_backbone_for(session.config)
    return bottleneck_features(session, backbone, "train")


def test_features_are_computed_once_then_reused(dataset_copy, tmp_path):
    session = session_for(dataset_copy, tmp_path)
    first = features(session)
    second = features(session)
    assert "computing train" in session.log[0]
    assert "reused" in session.log[1]
    assert second.key == first.key
    np.testing.assert_array_equal(second.features["P5"], first.features["P5"])
    np.testing.assert_array_equal(second.targets["box"], first.targets["box"])
    num_images = len([i for i in session.data.train.images if i.annotations])
    assert first.features["P5"].shape == (num_images, 2, 2, 128)  # 64 px / stride 32, tiny C5
    assert first.targets["class"].shape == (num_images,)


def test_changed_image_content_invalidates(dataset_copy, tmp_path):
    session = session_for(dataset_copy, tmp_path)
    before = features(session)
    record = session.data.train.images[0]
    path = session.data.train.image_path(record)
    pixels = np.array(Image.open(path))
    pixels[:8, :8] = 255 - pixels[:8, :8]
    Image.fromarray(pixels).save(path)
    after = features(session_for(dataset_copy, tmp_path))
    assert after.key != before.key
    assert not np.array_equal(after.features["P5"][0], before.features["P5"][0])


def test_changed_annotations_invalidate(dataset_copy, tmp_path):
    before = features(session_for(dataset_copy, tmp_path))
    path = dataset_copy / "annotations" / "instances_train.json"
    path.write_text(path.read_text().replace('"info": {', '"info": {"edited": 1, ', 1))
    after = features(session_for(dataset_copy, tmp_path))
    assert after.key != before.key


def test_changed_backbone_weights_or_image_size_invalidate(dataset_copy, tmp_path):
    base = features(session_for(dataset_copy, tmp_path))
    reseeded = features(session_for(dataset_copy, tmp_path, "seed=1"))  # another random init
    larger = features(session_for(dataset_copy, tmp_path, "model.image_size=96"))
    assert len({base.key, reseeded.key, larger.key}) == 3
    assert larger.features["P5"].shape[1:3] == (3, 3)


def test_store_is_atomic_and_keeps_an_existing_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(name="x")
    first = cache.store(key, {"P5": np.ones((2, 1, 1, 3), np.float32)}, np.array([1, 2]))
    second = cache.store(key, {"P5": np.zeros((2, 1, 1, 3), np.float32)}, np.array([3, 4]))
    np.testing.assert_array_equal(second.features["P5"], first.features["P5"])
    np.testing.assert_array_equal(second.targets, [1, 2])  # one array, not a dict, round trips
    assert [p.name for p in tmp_path.iterdir()] == [key]  # no staging folder left behind
