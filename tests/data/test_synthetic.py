"""The synthetic shapes dataset: determinism, COCO validity, masks vs boxes vs semantic PNGs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detseg.data.coco import load_coco
from detseg.data.errors import DatasetError
from detseg.data.synthetic import (CATEGORIES, MANIFEST_NAME, MIN_VISIBLE_PIXELS, Shape, ensure_synthetic,
                                   generate_synthetic, render_background, render_image, sample_shapes,
                                   semantic_mask_path, visible_shapes)

REPO_ROOT = Path(__file__).resolve().parents[2]
COCO_SMALL_AREA, COCO_LARGE_AREA = 32 ** 2, 96 ** 2


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _all_splits(root: Path):
    return [load_coco(root / "annotations" / f"instances_{s}.json") for s in ("train", "val", "test")]


@pytest.fixture(scope="module")
def shapes_256(tmp_path_factory) -> Path:
    """100 images at 256 px: the size the brief's small/medium/large promise is about."""
    root = tmp_path_factory.mktemp("synth256") / "shapes"
    generate_synthetic(root, num_images=100, image_size=256, seed=3)
    return root


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = generate_synthetic(tmp_path / "a", num_images=10, image_size=64, seed=7)
    generate_synthetic(tmp_path / "b", num_images=10, image_size=64, seed=7)
    generate_synthetic(tmp_path / "c", num_images=10, image_size=64, seed=8)
    hashes_a, hashes_b, hashes_c = (_file_hashes(tmp_path / n) for n in "abc")
    assert hashes_a == hashes_b
    assert len(hashes_a) == 10 * 2 + 3 + 1  # images, masks, three splits, manifest
    differing = [name for name in hashes_a if hashes_a[name] != hashes_c.get(name)]
    assert sum(name.startswith("images/") for name in differing) == 10
    assert first == {s: tmp_path / "a" / "annotations" / f"instances_{s}.json" for s in ("train", "val", "test")}


def test_an_image_does_not_depend_on_the_dataset_size(tmp_path):
    generate_synthetic(tmp_path / "small", num_images=4, image_size=64, seed=1)
    generate_synthetic(tmp_path / "large", num_images=9, image_size=64, seed=1)
    for i in range(4):
        name = f"synth_{i:06d}.png"
        for folder in ("images", "masks"):
            assert (tmp_path / "small" / folder / name).read_bytes() == \
                (tmp_path / "large" / folder / name).read_bytes()


def test_every_split_loads_with_pycocotools(synthetic_dir):
    for split in ("train", "val", "test"):
        coco = COCO(str(synthetic_dir / "annotations" / f"instances_{split}.json"))
        assert sorted(coco.getCatIds()) == [1, 2, 3]
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"circle", "rectangle", "triangle"}
        assert all(c["supercategory"] == "shape" for c in coco.loadCats(coco.getCatIds()))
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert isinstance(ann["segmentation"]["counts"], str)
            assert ann["iscrowd"] == 0
            assert coco.annToMask(ann).sum() == ann["area"]


def test_splits_partition_the_images_and_ids_are_unique(synthetic_dir):
    splits = _all_splits(synthetic_dir)
    image_ids = [i.id for s in splits for i in s.images]
    assert sorted(image_ids) == list(range(1, 49))
    assert [len(s.images) for s in splits] == [34, 7, 7]  # round(0.7 * 48), round(0.15 * 48), rest
    annotation_ids = [a.id for s in splits for a in s.annotations]
    assert len(annotation_ids) == len(set(annotation_ids))
    for split in splits:
        for record in split.images:
            assert split.image_path(record).is_file()
            with Image.open(split.image_path(record)) as image:
                assert image.mode == "RGB" and image.size == (128, 128)


def test_masks_lie_inside_tight_boxes(synthetic_dir):
    checked = 0
    for split in _all_splits(synthetic_dir):
        for record in split.images:
            for ann in record.annotations:
                mask = ann.mask(record.height, record.width)
                rows, cols = np.nonzero(mask)
                x, y, w, h = ann.bbox
                assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)
                assert mask.sum() == ann.area >= MIN_VISIBLE_PIXELS
                checked += 1
    assert checked > 48


def test_semantic_png_agrees_with_instance_masks(synthetic_dir):
    for split in _all_splits(synthetic_dir):
        for record in split.images:
            with Image.open(semantic_mask_path(synthetic_dir, record.file_name)) as png:
                assert png.mode == "L"
                semantic = np.asarray(png)
            union = np.zeros_like(semantic, dtype=np.int32)
            for ann in record.annotations:
                mask = ann.mask(record.height, record.width).astype(bool)
                assert np.all(semantic[mask] == ann.category_id)
                union += mask
            assert union.max(initial=0) <= 1  # visible masks never overlap
            assert np.array_equal(semantic > 0, union > 0)  # no painted object goes unannotated


def test_sizes_classes_and_empty_images_at_256px(shapes_256):
    splits = _all_splits(shapes_256)
    areas = np.array([a.area for s in splits for a in s.annotations])
    assert np.sum(areas < COCO_SMALL_AREA) >= 50
    assert np.sum((areas >= COCO_SMALL_AREA) & (areas < COCO_LARGE_AREA)) >= 50
    assert np.sum(areas >= COCO_LARGE_AREA) >= 8
    categories = [a.category_id for s in splits for a in s.annotations]
    assert all(categories.count(c["id"]) >= 30 for c in CATEGORIES)
    per_image = [len(i.annotations) for s in splits for i in s.images]
    assert 1 <= per_image.count(0) <= 15
    assert max(per_image) <= 6 and sum(n >= 4 for n in per_image) >= 10


def test_occluded_instances_are_cut_back_or_dropped():
    size = 40
    def square(x0, y0, x1, y1):
        mask = np.zeros((size, size), bool)
        mask[y0:y1, x0:x1] = True
        return Shape(1, mask, np.zeros(3, np.float32), np.zeros(2, np.float32))
    shapes = [square(0, 0, 20, 20),    # 400 px; the next covers its right half: 50 % visible
              square(10, 0, 30, 20),   # 400 px; the third leaves 100 px (25 %) visible: dropped
              square(15, 0, 40, 20),   # 500 px, on top
              square(0, 0, 6, 4),      # 24 px on top of the first: kept
              square(30, 30, 34, 34)]  # 16 px, all visible but under MIN_VISIBLE_PIXELS: dropped
    keep, owner = visible_shapes(shapes, size)
    assert keep == [0, 2, 3]
    # With the second dropped, the first shows columns 0..14 less the 24 px on top of it.
    assert np.sum(owner == 0) == 15 * 20 - 24
    assert [np.sum(owner == k) for k in (1, 2, 3, 4)] == [0, 500, 24, 0]


def _dropped_shape_regions(seed: int, size: int, images: int):
    """(index, background, colour, pixels only a dropped shape covered) per dropped shape."""
    for index in range(images):
        rng = np.random.default_rng([seed, index])  # the same stream render_image uses
        background = render_background(rng, size)
        shapes = sample_shapes(rng, size, background)
        keep, owner = visible_shapes(shapes, size)
        for k in sorted(set(range(len(shapes))) - set(keep)):
            yield index, background, shapes[k].colour, shapes[k].mask & (owner < 0)


def test_dropped_shapes_are_not_painted():
    """An object too hidden to annotate must not appear in the picture either."""
    checked = 0
    for index, background, colour, region in _dropped_shape_regions(seed=0, size=128, images=120):
        if region.sum() < 30:
            continue
        background_mean = background[region].mean(axis=0)
        if np.linalg.norm(colour - background_mean) < 40:
            continue
        image, _, _ = render_image(0, index, 128)
        assert np.linalg.norm(image[region].mean(axis=0) - background_mean) < 12, index
        checked += 1
    assert checked >= 2


def test_ensure_reuses_then_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "cache"
    paths = ensure_synthetic(root, num_images=6, image_size=64, seed=0)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert ensure_synthetic(root, num_images=6, image_size=64, seed=0) == paths
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    before = _file_hashes(root)
    ensure_synthetic(root, num_images=6, image_size=64, seed=5)
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 5
    assert _file_hashes(root)["images/synth_000000.png"] != before["images/synth_000000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no staging folders left


def test_shape_count_and_size_options_hold_and_are_part_of_the_manifest(tmp_path):
    root = tmp_path / "single"
    ensure_synthetic(root, num_images=30, image_size=128, seed=1, max_shapes=1, min_shape_size=0.3)
    records = [record for split in _all_splits(root) for record in split.images]
    counts = [len(record.annotations) for record in records]
    assert max(counts) == 1 and sum(counts) >= 20  # a few images are empty by design
    # A shape's diameter is at least 0.3 * 128 px; rotation and aspect keep its box's
    # longer side above about 0.3 * 128 / sqrt(3) (aspect up to 3:1).
    longest = [max(a.bbox[2], a.bbox[3]) for r in records for a in r.annotations]
    assert min(longest) >= 0.3 * 128 / 3 ** 0.5 - 1
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["max_shapes"] == 1 and manifest["min_shape_size"] == 0.3
    ensure_synthetic(root, num_images=30, image_size=64, seed=1)  # the default: several shapes again
    assert max(len(r.annotations) for split in _all_splits(root) for r in split.images) > 1


def test_existing_folders_are_protected(tmp_path):
    target = tmp_path / "out"
    generate_synthetic(target, num_images=3, image_size=64, seed=0)
    with pytest.raises(DatasetError, match="already exists"):
        generate_synthetic(target, num_images=3, image_size=64, seed=1)
    generate_synthetic(target, num_images=4, image_size=64, seed=1, overwrite=True)
    assert len(list((target / "images").iterdir())) == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a detseg synthetic dataset"):
        ensure_synthetic(foreign, num_images=3, image_size=64, seed=0)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "out"]


@pytest.mark.parametrize("kwargs, field", [
    ({"fractions": (0.5, 0.5, 0.5)}, "fractions"),
    ({"num_images": 0}, "num_images"),
    ({"image_size": 8}, "image_size"),
    ({"max_shapes": 0}, "max_shapes"),
    ({"min_shape_size": 0.9}, "min_shape_size"),
])
def test_bad_parameters_are_named(tmp_path, kwargs, field):
    with pytest.raises(DatasetError, match=field):
        generate_synthetic(tmp_path / "x", **{"num_images": 2, "image_size": 64, **kwargs})
    assert not (tmp_path / "x").exists()


def test_cli_writes_the_layout_and_reports_errors_in_one_line(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "detseg", "data", "synth", "--out", str(out),
               "--num-images", "5", "--image-size", "64", "--seed", "2"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for split in ("train", "val", "test"):
        assert f"{split}: {out / 'annotations' / f'instances_{split}.json'}" in done.stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"synth_{i:06d}.png" for i in range(5)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"synth_{i:06d}.png" for i in range(5)]
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
