"""COCO records: load/write round trip, label map, segmentation decoding, errors."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from detseg.data.coco import Category, LabelMap, decode_segmentation, encode_mask, load_coco, write_coco
from detseg.data.errors import DatasetError


def _coco_payload():
    square = np.zeros((20, 30), np.uint8)
    square[5:10, 10:20] = 1
    return {
        "images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20},
                   {"id": 9, "file_name": "b.png", "width": 30, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 42, "bbox": [10, 5, 10, 5], "area": 50,
             "iscrowd": 0, "segmentation": [[10, 5, 20, 5, 20, 10, 10, 10]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 5, 10, 5], "area": 50,
             "iscrowd": 1, "segmentation": encode_mask(square)},
        ],
        "categories": [{"id": 42, "name": "zebra"}, {"id": 3, "name": "cat"}],
    }


def test_load_groups_annotations_by_image_and_keeps_ids(tmp_path):
    path = write_coco(_coco_payload(), tmp_path / "annotations" / "instances.json")
    dataset = load_coco(path)
    assert [image.id for image in dataset.images] == [7, 9]
    assert [a.id for a in dataset.images[0].annotations] == [1, 2]
    assert dataset.images[1].annotations == ()
    np.testing.assert_allclose(dataset.images[0].boxes_xyxy()[0], [10, 5, 20, 10])
    assert dataset.images[0].annotations[1].iscrowd == 1


def test_label_map_is_contiguous_sorted_by_coco_id_and_round_trips():
    label_map = LabelMap.from_categories([Category(42, "zebra"), Category(3, "cat")])
    assert label_map.coco_ids == (3, 42)
    assert label_map.names == ("cat", "zebra")
    assert label_map.index_of(42) == 1 and label_map.coco_id(1) == 42
    assert LabelMap.from_dict(json.loads(json.dumps(label_map.to_dict()))) == label_map
    with pytest.raises(DatasetError, match="category id 5"):
        label_map.index_of(5)


def test_written_json_loads_in_pycocotools_and_round_trips(tmp_path):
    path = write_coco(_coco_payload(), tmp_path / "in.json")
    dataset = load_coco(path, image_dir=tmp_path)
    again = write_coco(dataset, tmp_path / "out.json")
    coco = COCO(str(again))
    assert sorted(coco.getImgIds()) == [7, 9]
    assert coco.anns[1]["bbox"] == [10.0, 5.0, 10.0, 5.0]
    assert load_coco(again, image_dir=tmp_path).to_dict()["annotations"] == dataset.to_dict()["annotations"]


@pytest.mark.parametrize("kind", ["polygon", "compressed_rle", "uncompressed_rle"])
def test_segmentations_decode_to_the_same_mask(kind):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 10:20] = 1
    if kind == "polygon":
        segmentation = [[10, 5, 20, 5, 20, 10, 10, 10]]
    elif kind == "compressed_rle":
        segmentation = encode_mask(mask)
    else:  # uncompressed RLE: column-major run lengths starting with zeros
        flat = mask.flatten(order="F")
        runs, value, count = [], 0, 0
        for pixel in flat:
            if pixel == value:
                count += 1
            else:
                runs.append(count)
                value, count = pixel, 1
        runs.append(count)
        segmentation = {"size": [20, 30], "counts": runs}
    decoded = decode_segmentation(segmentation, 20, 30)
    assert decoded.dtype == np.uint8 and decoded.shape == (20, 30)
    # pycocotools rasterizes polygons on pixel corners; compare areas loosely for polygons
    tolerance = 15 if kind == "polygon" else 0
    assert abs(int(decoded.sum()) - int(mask.sum())) <= tolerance
    assert decoded[7, 15] == 1 and decoded[0, 0] == 0


def test_encode_mask_gives_json_ready_string_counts():
    mask = np.eye(8, dtype=np.uint8)
    rle = encode_mask(mask)
    json.dumps(rle)
    assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == 8


@pytest.mark.parametrize("payload, message", [
    ([], "top level must be a JSON object"),
    ({"images": [], "annotations": []}, "missing top-level key"),
    ({"images": [{"id": 1}], "annotations": [], "categories": []}, "malformed record"),
    ({"images": [], "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1]}],
      "categories": [{"id": 1, "name": "x"}]}, "unknown image id"),
])
def test_structural_faults_raise_dataset_error_naming_the_file(tmp_path, payload, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=message) as error:
        load_coco(path)
    assert "bad.json" in str(error.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  1,\n  ]\n}')
    with pytest.raises(DatasetError, match=r"broken.json: invalid JSON at line 3"):
        load_coco(path)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out.json"
    write_coco(_coco_payload(), target)
    with pytest.raises(TypeError):
        write_coco({"images": [object()], "annotations": [], "categories": []}, target)
    assert json.loads(target.read_text())["images"][0]["id"] == 7  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unreadable_json_files_are_named_in_plain_words(tmp_path):
    with pytest.raises(DatasetError, match=r"is a folder, not a JSON file") as error:
        load_coco(tmp_path)
    assert "Errno" not in str(error.value)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"images": "caf\xe9"}')
    with pytest.raises(DatasetError, match=r"latin\.json: not UTF-8 text \(bad byte at offset 15\)"):
        load_coco(latin)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"images": [], "annotations": [], "categories": []}')
    assert load_coco(bom).images == []
