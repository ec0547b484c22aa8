"""Bad inputs stop the run naming the file or record, or are skipped and counted; odd
but valid images (grey, RGBA, GIF, BMP, JPEG) decode to RGB."""

import logging

import numpy as np
import pytest
from PIL import Image

from detseg.data.coco import load_coco, write_coco
from detseg.data.errors import DatasetError
from detseg.pipelines import build_dataset, build_eval_dataset
from detseg.pipelines.records import with_semantic_masks

CATEGORIES = [{"id": 1, "name": "thing"}]


def write_dataset(root, files, annotations=None, size=(32, 32)):
    """COCO file over `files` {name: pixels array or raw bytes}, every image `size` (h, w)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, (name, content) in enumerate(files.items(), start=1):
        if content is not None:
            path = root / "images" / name
            path.write_bytes(content) if isinstance(content, bytes) else Image.fromarray(content).save(path)
        images.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
    if annotations is None:
        annotations = [{"id": i["id"], "image_id": i["id"], "category_id": 1, "bbox": [2, 2, 10, 10],
                        "area": 100.0, "iscrowd": 0} for i in images]
    path = write_coco({"images": images, "annotations": annotations, "categories": CATEGORIES},
                      root / "annotations" / "instances.json")
    return load_coco(path)


def good_pixels(seed=0, size=(32, 32)):
    return np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)


def png_bytes(tmp_path, pixels):
    path = tmp_path / "source.png"
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def count_images(dataset):
    return sum(int(x.shape[0]) for x, _ in dataset)


@pytest.mark.parametrize("bad_name, content, reason", [
    ("garbage.png", b"this is not an image at all" * 10, "not a recognised image"),
    ("missing.png", None, "file not found"),
    ("empty.png", b"", "empty file"),
])
def test_bad_image_file_is_named(tmp_path, bad_name, content, reason):
    dataset = write_dataset(tmp_path, {"ok.png": good_pixels(), bad_name: content})
    with pytest.raises(DatasetError, match=reason) as error:
        build_dataset(dataset, "detection", 32, batch_size=2)
    assert str(tmp_path / "images" / bad_name) in str(error.value)
    assert "skip_invalid=True" in str(error.value)


def test_truncated_png_is_named(tmp_path):
    whole = png_bytes(tmp_path, good_pixels(1))
    dataset = write_dataset(tmp_path, {"ok.png": good_pixels(), "cut.png": whole[: len(whole) // 2]})
    with pytest.raises(DatasetError, match=r"cut\.png.*truncated"):
        build_eval_dataset(dataset, "detection", 32, batch_size=2)


def test_image_size_that_contradicts_the_record_is_named(tmp_path):
    dataset = write_dataset(tmp_path, {"wide.png": good_pixels(size=(32, 40))})
    with pytest.raises(DatasetError, match=r"wide\.png: image is 40x32"):
        build_dataset(dataset, "detection", 32, batch_size=1)


def test_skip_invalid_skips_counts_and_logs(tmp_path, caplog):
    whole = png_bytes(tmp_path, good_pixels(1))
    files = {"a.png": good_pixels(1), "missing.png": None, "b.png": good_pixels(2),
             "cut.png": whole[:100], "c.png": good_pixels(3)}
    dataset = write_dataset(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        batches = build_dataset(dataset, "detection", 32, batch_size=2, skip_invalid=True)
    assert count_images(batches) == 3
    assert "skipped 2 of 5 images" in caplog.text
    assert "missing.png (file not found)" in caplog.text and "cut.png (truncated" in caplog.text


def test_what_was_left_out_is_said_once_per_file_however_often_its_pipeline_is_built(tmp_path, caplog):
    dataset = write_dataset(tmp_path, {"a.png": good_pixels(1), "missing.png": None})
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        for _ in range(3):  # a run builds a split's pipeline for features, fine-tuning, evaluation
            build_dataset(dataset, "detection", 32, batch_size=1, skip_invalid=True)
            build_eval_dataset(dataset, "detection", 32, batch_size=1, skip_invalid=True)
    assert caplog.text.count("skipped 1 of 2 images: ") == 1


@pytest.mark.parametrize("bbox, reason", [([2, 2, 0, 10], "zero or negative width"),
                                          ([40, 2, 5, 5], "outside the 32x32 image"),
                                          ([2, 2, float("nan"), 3], "non-finite")])
def test_bad_annotation_is_named_or_skipped(tmp_path, caplog, bbox, reason):
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0},
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1, "iscrowd": 0}]
    dataset = write_dataset(tmp_path, {"a.png": good_pixels()}, annotations)
    with pytest.raises(DatasetError, match=f"annotation 2 of image 1 .*a.png.*{reason}"):
        build_dataset(dataset, "detection", 32, batch_size=1)
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        batches = build_dataset(dataset, "detection", 32, batch_size=1, max_objects=3, skip_invalid=True)
    _, y = next(iter(batches))
    assert (y["classes"].numpy() >= 0).sum() == 1
    assert "skipped 1 of 2 annotations: annotation 2" in caplog.text


def test_nothing_usable_is_an_error(tmp_path):
    dataset = write_dataset(tmp_path, {"missing.png": None})
    with pytest.raises(DatasetError, match="no usable images"):
        build_dataset(dataset, "detection", 32, batch_size=1, skip_invalid=True)


def test_semantic_png_with_unknown_values_is_named(tmp_path):
    dataset = write_dataset(tmp_path, {"a.png": good_pixels()})
    (tmp_path / "masks").mkdir()
    labels = np.zeros((32, 32), np.uint8)
    labels[:4] = 9  # not a category id
    Image.fromarray(labels).save(tmp_path / "masks" / "a.png")
    with pytest.raises(Exception, match=r"masks/a\.png: values \[9\]"):
        next(iter(build_dataset(with_semantic_masks(dataset, tmp_path / "masks"), "semantic", 32, batch_size=1)))


def test_grey_rgba_gif_bmp_and_jpeg_become_rgb(tmp_path):
    rgb = good_pixels(4)
    grey = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 90, np.uint8)], axis=-1)
    (tmp_path / "images").mkdir()
    frames = [Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (32, 32), (10, 200, 10))]
    frames[0].save(tmp_path / "images" / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb).save(tmp_path / "images" / "photo.bmp")
    # JPEG is lossy: a smooth picture, so the decoded pixels can be compared closely.
    smooth = np.stack([*np.meshgrid(np.arange(32) * 8, np.arange(32) * 4), np.full((32, 32), 100)],
                      axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "images" / "photo.jpg", quality=95, subsampling=0)
    files = {"grey.png": grey, "rgba.png": rgba, "anim.gif": None, "photo.bmp": None, "photo.jpg": None}
    dataset = write_dataset(tmp_path, files)
    x, _ = next(iter(build_eval_dataset(dataset, "detection", 32, batch_size=5)))  # 32 px: scale 1
    x = x.numpy()
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(x[0], np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(x[1], rgb)  # alpha dropped, colour kept
    np.testing.assert_array_equal(x[2], np.broadcast_to([200, 10, 10], (32, 32, 3)))  # first frame only
    np.testing.assert_array_equal(x[3], rgb)
    assert np.abs(x[4] - smooth).max() <= 8
