"""Splits by image (train/val/test, k folds) and dataset statistics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detseg.data.coco import Annotation, Category, CocoDataset, ImageRecord, dataset_from_dict, load_coco, write_coco
from detseg.data.errors import DatasetError
from detseg.data.splits import k_fold, split_by_image
from detseg.data.stats import dataset_statistics, format_statistics
from detseg.cli import main as detseg_main

REPO_ROOT = Path(__file__).resolve().parents[2]


def _records_dataset(num_images: int) -> CocoDataset:
    """`num_images` images with ids 100, 101, ...; image k has k % 3 boxes."""
    images = []
    for k in range(num_images):
        image_id = 100 + k
        annotations = tuple(Annotation(image_id * 10 + j, image_id, 1, (j, j, 4.0, 4.0), 16.0)
                            for j in range(k % 3))
        images.append(ImageRecord(image_id, f"{k}.png", 32, 32, annotations))
    return CocoDataset(images, [Category(1, "thing")], Path("images"))


def _ids(dataset: CocoDataset) -> list[int]:
    return [image.id for image in dataset.images]


def test_split_is_disjoint_complete_and_sized_by_fractions():
    dataset = _records_dataset(20)
    parts = split_by_image(dataset, (0.7, 0.15, 0.15), seed=3)
    assert list(parts) == ["train", "val", "test"]
    assert [len(p.images) for p in parts.values()] == [14, 3, 3]
    all_ids = [i for p in parts.values() for i in _ids(p)]
    assert sorted(all_ids) == _ids(dataset)  # every image once, none twice
    for part in parts.values():
        assert _ids(part) == sorted(_ids(part))  # the dataset's own order is kept
        for image in part.images:  # annotations travel with their image
            assert all(a.image_id == image.id for a in image.annotations)
            assert len(image.annotations) == (image.id - 100) % 3


def test_split_rounds_sizes_so_they_add_up():
    # 10 images at .7/.15/.15 -> 7, 1.5, 1.5: the half goes to the earlier part
    assert [len(p.images) for p in split_by_image(_records_dataset(10)).values()] == [7, 2, 1]
    assert [len(p.images) for p in split_by_image(_records_dataset(3), (0.5, 0.5, 0.0)).values()] == [2, 1, 0]


def test_split_is_deterministic_under_a_seed():
    dataset = _records_dataset(30)
    first = {k: _ids(v) for k, v in split_by_image(dataset, seed=7).items()}
    again = {k: _ids(v) for k, v in split_by_image(dataset, seed=7).items()}
    other = {k: _ids(v) for k, v in split_by_image(dataset, seed=8).items()}
    assert first == again
    assert first != other


@pytest.mark.parametrize("fractions, message", [
    ((0.7, 0.2, 0.2), "sum to 1"),
    ((0.7, 0.3), "need 3"),
    ((1.2, -0.1, -0.1), ">= 0"),
    ((float("nan"), 0.5, 0.5), "finite"),
])
def test_split_rejects_bad_fractions(fractions, message):
    with pytest.raises(DatasetError, match=message):
        split_by_image(_records_dataset(5), fractions)


def test_split_accepts_fractions_off_by_rounding():
    parts = split_by_image(_records_dataset(6), (1 / 3, 1 / 3, 1 / 3 + 5e-7))
    assert [len(p.images) for p in parts.values()] == [2, 2, 2]


def test_k_fold_puts_every_image_in_exactly_one_val_fold():
    dataset = _records_dataset(10)
    folds = k_fold(dataset, 3, seed=1)
    assert len(folds) == 3
    val_ids = [i for _, val in folds for i in _ids(val)]
    assert sorted(val_ids) == _ids(dataset)
    assert sorted(len(val.images) for _, val in folds) == [3, 3, 4]
    for train, val in folds:
        assert not set(_ids(train)) & set(_ids(val))
        assert sorted(_ids(train) + _ids(val)) == _ids(dataset)
    assert [_ids(v) for _, v in k_fold(dataset, 3, seed=1)] == [_ids(v) for _, v in folds]


@pytest.mark.parametrize("k", [1, 11])
def test_k_fold_rejects_impossible_k(k):
    with pytest.raises(DatasetError, match="k"):
        k_fold(_records_dataset(10), k)


def _stats_dataset(tmp_path: Path) -> tuple[CocoDataset, list[np.ndarray]]:
    """Three images (RGB, grayscale, RGBA) of random pixels and hand-made annotations.

    Returns the dataset and each image's pixels as RGB, built here without PIL's conversion.
    """
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(rgb, "RGB").save(tmp_path / "images" / "rgb.png")
    Image.fromarray(gray, "L").save(tmp_path / "images" / "gray.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "rgba.png")
    payload = {
        "images": [{"id": 1, "file_name": "rgb.png", "width": 5, "height": 6},
                   {"id": 2, "file_name": "gray.png", "width": 7, "height": 4},
                   {"id": 3, "file_name": "rgba.png", "width": 3, "height": 3}],
        "annotations": [
            # areas: 1023 small, 1024 medium (COCO: small < 32²), 9215 medium, 9216 large
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 20], "area": 1023},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 30, 10], "area": 1024},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [0, 0, 40, 10], "area": 9215},
            {"id": 4, "image_id": 2, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 9216},
            {"id": 5, "image_id": 2, "category_id": 9, "bbox": [0, 0, 99, 99], "area": 50, "iscrowd": 1},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 11, "name": "eel"}],
    }
    write_coco(payload, tmp_path / "annotations.json")
    pixels = [rgb, np.repeat(gray[..., None], 3, axis=2), rgba[..., :3]]
    return load_coco(tmp_path / "annotations.json", tmp_path / "images"), pixels


def test_statistics_match_hand_counts_and_numpy(tmp_path):
    dataset, pixels = _stats_dataset(tmp_path)
    stats = dataset_statistics(dataset)
    assert (stats["num_images"], stats["num_annotations"], stats["num_categories"]) == (3, 5, 3)
    assert stats["images_without_objects"] == 1
    assert stats["crowd_annotations"] == 1
    assert stats["objects_per_class"] == {"cat": 3, "dog": 1, "eel": 0}
    assert stats["images_per_class"] == {"cat": 2, "dog": 1, "eel": 0}
    assert stats["area_ranges"] == {"small": 1, "medium": 2, "large": 1}
    # non-crowd widths 10, 30, 40, 20; heights 20, 10, 10, 20; aspects 0.5, 3, 4, 1
    assert (stats["box_width"]["min"], stats["box_width"]["median"], stats["box_width"]["max"]) == (10, 25, 40)
    assert (stats["box_height"]["min"], stats["box_height"]["max"]) == (10, 20)
    assert (stats["box_aspect"]["min"], stats["box_aspect"]["median"], stats["box_aspect"]["max"]) == (0.5, 2, 4)
    assert stats["image_width"]["max"] == 7 and stats["image_height"]["min"] == 3
    every_pixel = np.concatenate([p.reshape(-1, 3) for p in pixels]).astype(np.float64)
    np.testing.assert_allclose(stats["channel_mean"], every_pixel.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["channel_std"], every_pixel.std(axis=0), rtol=1e-12)
    assert stats["channel_images"] == 3
    json.dumps(stats)  # JSON-ready


def test_statistics_with_max_images_reads_an_even_spread(tmp_path):
    dataset, pixels = _stats_dataset(tmp_path)
    stats = dataset_statistics(dataset, max_images=2)
    assert stats["channel_images"] == 2
    chosen = np.concatenate([pixels[0].reshape(-1, 3), pixels[2].reshape(-1, 3)]).astype(np.float64)
    np.testing.assert_allclose(stats["channel_mean"], chosen.mean(axis=0), rtol=1e-12)
    assert "channel_mean" not in dataset_statistics(dataset, channel_stats=False)


def test_statistics_name_a_missing_image(tmp_path):
    dataset, _ = _stats_dataset(tmp_path)
    (tmp_path / "images" / "gray.png").unlink()
    with pytest.raises(DatasetError, match=r"gray\.png"):
        dataset_statistics(dataset)


def test_statistics_of_a_dataset_without_annotations(tmp_path):
    dataset = dataset_from_dict({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]},
                                tmp_path)
    stats = dataset_statistics(dataset)
    assert stats["box_width"] is None and stats["channel_mean"] is None
    assert "images: 0" in format_statistics(stats)


def test_progress_bar_appears_only_for_many_images(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    records = [{"id": k, "file_name": "x.png", "width": 2, "height": 2} for k in range(1, 202)]
    dataset = dataset_from_dict({"images": records, "annotations": [], "categories": []}, tmp_path / "images")
    dataset_statistics(dataset, max_images=200)
    assert "channel stats" not in capsys.readouterr().err
    dataset_statistics(dataset)
    assert "channel stats" in capsys.readouterr().err


def test_format_statistics_shows_classes_and_channels(tmp_path):
    dataset, _ = _stats_dataset(tmp_path)
    text = format_statistics(dataset_statistics(dataset))
    lines = text.splitlines()
    assert any(line.split() == ["cat", "3", "2"] for line in lines)
    assert any(line.split() == ["eel", "0", "0"] for line in lines)
    assert "small 1, medium 2, large 1" in text
    assert any(line.strip().startswith("R: mean") for line in lines)


def test_cli_stats_in_a_subprocess_prints_json(tmp_path):
    _stats_dataset(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "detseg", "data", "stats", str(tmp_path / "annotations.json"),
         "--images", str(tmp_path / "images"), "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["objects_per_class"] == {"cat": 3, "dog": 1, "eel": 0}
    assert stats["channel_images"] == 3


def test_cli_split_writes_disjoint_files(tmp_path, capsys):
    write_coco(_records_dataset(10), tmp_path / "all.json")
    assert detseg_main(["data", "split", str(tmp_path / "all.json"), "--out", str(tmp_path / "s"),
                        "--seed", "4"]) == 0
    parts = {name: load_coco(tmp_path / "s" / f"all_{name}.json") for name in ("train", "val", "test")}
    assert [len(p.images) for p in parts.values()] == [7, 2, 1]
    assert sorted(i for p in parts.values() for i in _ids(p)) == list(range(100, 110))
    assert detseg_main(["data", "split", str(tmp_path / "all.json"), "--out", str(tmp_path / "f"),
                        "--folds", "5"]) == 0
    val_ids = [i for k in range(5) for i in _ids(load_coco(tmp_path / "f" / f"all_fold{k}_val.json"))]
    assert sorted(val_ids) == list(range(100, 110))
    assert detseg_main(["data", "split", str(tmp_path / "all.json"), "--out", str(tmp_path / "x"),
                        "--fractions", "0.5,oops,0.5"]) == 2
    assert "--fractions" in capsys.readouterr().err
