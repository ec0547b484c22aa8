"""Semantic ground truth comes from the annotations unless a mask folder is named; the
`images/` + `masks/` layout is never taken as semantic masks by guessing (it often holds
INSTANCE masks, values `category_id * 1000 + k`)."""

import numpy as np
import pytest
from PIL import Image

from detseg.data.coco import load_coco, write_coco
from detseg.data.errors import DatasetError
from detseg.pipelines import build_dataset
from detseg.pipelines.records import prepare_images, with_semantic_masks
from detseg.training.config import config_from_mapping
from detseg.training.predictions import eval_targets
from detseg.training.training_data import resolve_training_data

SIZE = 32
SQUARE = (slice(4, 14), slice(4, 14))  # the one annotated object, category 1


def _write_png(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)


@pytest.fixture
def instance_mask_layout(tmp_path):
    """images/ + masks/ (INSTANCE masks: 1001 on the object) + annotations/instances.json."""
    _write_png(tmp_path / "images" / "a.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    instance = np.zeros((SIZE, SIZE), np.uint16)
    instance[SQUARE] = 1001
    _write_png(tmp_path / "masks" / "a.png", instance)
    polygon = [4, 4, 14, 4, 14, 14, 4, 14]
    payload = {"images": [{"id": 1, "file_name": "a.png", "height": SIZE, "width": SIZE}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100.0,
                                "iscrowd": 0, "segmentation": [polygon]}],
               "categories": [{"id": 1, "name": "thing"}]}
    return write_coco(payload, tmp_path / "annotations" / "instances.json")


def _from_annotations():
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[SQUARE] = 1  # class index 0 -> value 1
    return labels


def test_instance_masks_beside_the_images_are_not_taken_as_semantic_truth(instance_mask_layout):
    dataset = load_coco(instance_mask_layout)
    assert (dataset.image_dir.parent / "masks" / "a.png").is_file()
    (record,) = prepare_images(dataset, "semantic", 10).images
    assert record.semantic_path is None
    np.testing.assert_array_equal(eval_targets(dataset, "semantic")[1], _from_annotations())
    _, labels = next(iter(build_dataset(dataset, "semantic", SIZE, batch_size=1)))
    np.testing.assert_array_equal(labels.numpy()[0], _from_annotations())


def test_a_named_semantic_mask_folder_is_the_truth_in_evaluation_and_training(instance_mask_layout, tmp_path):
    semantic = np.zeros((SIZE, SIZE), np.uint8)
    semantic[:, : SIZE // 2] = 1  # category id 1 on the left half: not what the annotations say
    semantic[-2:] = 255  # ignore
    _write_png(tmp_path / "semantic" / "a.png", semantic)
    dataset = with_semantic_masks(load_coco(instance_mask_layout), tmp_path / "semantic")
    np.testing.assert_array_equal(eval_targets(dataset, "semantic")[1], semantic)
    _, labels = next(iter(build_dataset(dataset.subset([1]), "semantic", SIZE, batch_size=1)))
    np.testing.assert_array_equal(labels.numpy()[0], semantic)

    config = config_from_mapping({"name": "t", "model": {"family": "unet"},
                                  "data": {"train": str(instance_mask_layout), "val": str(instance_mask_layout),
                                           "semantic_masks": str(tmp_path / "semantic")}})
    data = resolve_training_data(config)
    for split in (data.train, data.val):
        np.testing.assert_array_equal(eval_targets(split, "semantic")[1], semantic)


def test_a_named_folder_must_exist_and_hold_every_image_mask(instance_mask_layout, tmp_path):
    with pytest.raises(DatasetError, match=r"data.semantic_masks .*nowhere: no such folder"):
        with_semantic_masks(load_coco(instance_mask_layout), tmp_path / "nowhere", "data.semantic_masks")
    (tmp_path / "empty").mkdir()
    dataset = with_semantic_masks(load_coco(instance_mask_layout), tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"semantic mask .*empty/a\.png not found"):
        prepare_images(dataset, "semantic", 10, check_files=False)
