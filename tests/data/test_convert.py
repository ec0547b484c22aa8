"""Converters: VOC XML, YOLO txt and mask PNGs -> COCO, and COCO -> YOLO -> COCO.

Every input here is written by hand with boxes chosen so the expected COCO numbers can
be worked out on paper (comments show the arithmetic).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detseg.data.coco import dataset_from_dict, decode_segmentation, load_coco, write_coco
from detseg.data.convert import coco_to_yolo, masks_to_coco, voc_to_coco, yolo_to_coco
from detseg.data.errors import DatasetError
from detseg.data.repairs import INCLUDE_UNLABELED, Repairs

REPO_ROOT = Path(__file__).resolve().parents[2]


def _image(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.full((height, width, channels), 100, np.uint8).squeeze()
    Image.fromarray(pixels, mode).save(path)
    return path


def _pycocotools_loads(payload: dict, path: Path) -> COCO:
    write_coco(payload, path)
    return COCO(str(path))


def _voc_xml(filename: str, objects: list[tuple[str, int, int, int, int, int]], size=(80, 60)) -> str:
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, x0, y0, x1, y1, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>1</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture
def voc_dir(tmp_path):
    _image(tmp_path / "images" / "cat1.jpg", 80, 60)
    _image(tmp_path / "images" / "two.jpg", 80, 60)
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "cat1.xml").write_text(_voc_xml("cat1.jpg", [("cat", 11, 21, 40, 50, 0)]))
    # the filename has no extension: found by stem; a difficult dog is kept
    (xml / "two.xml").write_text(_voc_xml("two", [("dog", 1, 1, 80, 60, 1), ("cat", 5, 6, 5, 6, 0)]))
    return tmp_path


def test_voc_boxes_become_zero_based_coco_boxes(voc_dir, tmp_path):
    payload = voc_to_coco(voc_dir / "xml", voc_dir / "images")
    assert [c["name"] for c in payload["categories"]] == ["cat", "dog"]
    assert [c["id"] for c in payload["categories"]] == [1, 2]
    assert [i["file_name"] for i in payload["images"]] == ["cat1.jpg", "two.jpg"]
    boxes = [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in payload["annotations"]]
    assert boxes == [
        (1, 1, [10.0, 20.0, 30.0, 30.0], 900.0),   # pixels 11..40 (1-based) = 10..40 (0-based edges)
        (2, 2, [0.0, 0.0, 80.0, 60.0], 4800.0),    # the whole 80x60 image
        (2, 1, [4.0, 5.0, 1.0, 1.0], 1.0),         # a single pixel
    ]
    assert all(a["iscrowd"] == 0 for a in payload["annotations"])
    coco = _pycocotools_loads(payload, tmp_path / "voc.json")
    assert len(coco.getAnnIds()) == 3


def test_voc_class_names_fix_order_and_reject_unknown_names(voc_dir):
    payload = voc_to_coco(voc_dir / "xml", voc_dir / "images", ["dog", "cat", "bird"])
    assert [(c["id"], c["name"]) for c in payload["categories"]] == [(1, "dog"), (2, "cat"), (3, "bird")]
    assert [a["category_id"] for a in payload["annotations"]] == [2, 1, 2]
    with pytest.raises(DatasetError, match=r"two\.xml.*#1.*dog"):
        voc_to_coco(voc_dir / "xml", voc_dir / "images", ["cat"])


@pytest.mark.parametrize("content, message", [
    ("<annotation><filename>cat1.jpg</filename><object>", r"invalid XML at line 1"),
    (_voc_xml("cat1.jpg", [("cat", 1, 2, 3, 4, 0)]).replace("<xmax>3</xmax>", ""), r"#1 \(cat\).*<xmax>"),
    (_voc_xml("cat1.jpg", [("cat", 1, 2, 3, 4, 0)]).replace("<ymin>2<", "<ymin>two<"), r"<ymin>.*'two'"),
    (_voc_xml("cat1.jpg", [("cat", 9, 2, 3, 4, 0)]), r"xmax < xmin"),
    (_voc_xml("missing.jpg", []), r"missing\.jpg.*not found"),
    (_voc_xml("cat1.jpg", [], size=(81, 60)), r"<size> says 81x60.*80x60"),
])
def test_voc_errors_name_the_xml_file_and_element(voc_dir, content, message):
    (voc_dir / "xml" / "two.xml").unlink()
    bad = voc_dir / "xml" / "cat1.xml"
    bad.write_text(content)
    with pytest.raises(DatasetError, match=message) as error:
        voc_to_coco(voc_dir / "xml", voc_dir / "images")
    assert str(bad) in str(error.value)


@pytest.fixture
def yolo_dir(tmp_path):
    _image(tmp_path / "images" / "a.png", 100, 50)
    _image(tmp_path / "images" / "sub" / "b.jpg", 40, 20, "L")
    _image(tmp_path / "images" / "empty.png", 10, 10)
    _image(tmp_path / "images" / "unlabelled.png", 10, 10)
    labels = tmp_path / "labels"
    (labels / "sub").mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.25 0.5 0.1 0.2\n\n1 0.5 0.5 1.0 1.0\n")
    # a triangle polygon (segment format) on the 40x20 image
    (labels / "sub" / "b.txt").write_text("1 0.25 0.25 0.75 0.25 0.5 1.0\n")
    (labels / "empty.txt").write_text("")
    return tmp_path


def test_yolo_boxes_and_polygons_become_coco(yolo_dir, tmp_path):
    repairs = Repairs(include_unlabeled=True)
    payload = yolo_to_coco(yolo_dir / "labels", yolo_dir / "images", ["person", "car"], repairs)
    assert repairs.made == {INCLUDE_UNLABELED: [str(yolo_dir / "images" / "unlabelled.png")]}
    assert [(i["file_name"], i["width"], i["height"]) for i in payload["images"]] == [
        ("a.png", 100, 50), ("empty.png", 10, 10), ("sub/b.jpg", 40, 20), ("unlabelled.png", 10, 10)]
    a, whole, triangle = payload["annotations"]
    # cx 0.25*100=25, w 0.1*100=10 -> x 20..30; cy 0.5*50=25, h 0.2*50=10 -> y 20..30
    assert (a["image_id"], a["category_id"]) == (1, 1)
    np.testing.assert_allclose(a["bbox"], [20, 20, 10, 10], atol=1e-9)
    np.testing.assert_allclose(whole["bbox"], [0, 0, 100, 50], atol=1e-9)
    assert "segmentation" not in a
    # triangle points (10,5) (30,5) (20,20): extent x 10..30, y 5..20
    assert (triangle["image_id"], triangle["category_id"]) == (3, 2)
    np.testing.assert_allclose(triangle["bbox"], [10, 5, 20, 15], atol=1e-9)
    np.testing.assert_allclose(triangle["segmentation"], [[10, 5, 30, 5, 20, 20]], atol=1e-9)
    assert 100 <= triangle["area"] <= 200  # rasterized area of a 150 px² triangle
    coco = _pycocotools_loads(payload, tmp_path / "yolo.json")
    assert coco.getAnnIds(imgIds=[2]) == [] and coco.getAnnIds(imgIds=[4]) == []


def test_yolo_reads_classes_txt_when_no_names_are_given(yolo_dir):
    (yolo_dir / "images" / "unlabelled.png").unlink()
    (yolo_dir / "labels" / "classes.txt").write_text("person\ncar\n\n")
    payload = yolo_to_coco(yolo_dir / "labels", yolo_dir / "images")
    assert [c["name"] for c in payload["categories"]] == ["person", "car"]
    (yolo_dir / "labels" / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="classes.txt"):
        yolo_to_coco(yolo_dir / "labels", yolo_dir / "images")


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.1", r"line 2: expected 5 numbers"),
    ("2 0.5 0.5 0.1 0.1", r"line 2: class index 2 is out of range 0..1"),
    ("-1 0.5 0.5 0.1 0.1", r"line 2: class index -1"),
    ("0 0.5 0.5 1.5 0.1", r"line 2: coordinates must be normalized"),
    ("car 0.5 0.5 0.1 0.1", r"line 2: expected an integer class"),
    ("0 0.5 0.5 0 0.1", r"line 2: width 0 and height 0.1 must be positive\): pass drop_invalid=True"),
    ("0 0.1 0.1 0.2 0.2 0.3", r"line 2: expected 5 numbers"),
])
def test_yolo_errors_name_file_and_line(yolo_dir, line, message):
    (yolo_dir / "images" / "unlabelled.png").unlink()
    bad = yolo_dir / "labels" / "a.txt"
    bad.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match=message) as error:
        yolo_to_coco(yolo_dir / "labels", yolo_dir / "images", ["person", "car"])
    assert str(bad) in str(error.value)


def test_yolo_label_without_image_is_an_error(yolo_dir):
    (yolo_dir / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"ghost\.txt.*has no image"):
        yolo_to_coco(yolo_dir / "labels", yolo_dir / "images", ["person", "car"])


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _decoded(annotation: dict, height: int, width: int) -> np.ndarray:
    return decode_segmentation(annotation["segmentation"], height, width)


def test_semantic_masks_split_each_class_into_connected_instances(tmp_path):
    _image(tmp_path / "images" / "m.jpg", 32, 24)
    mask = np.zeros((24, 32), np.uint8)
    mask[2:5, 3:9] = 1          # class 1, component A: rows 2..4, cols 3..8 -> 18 px
    mask[10:12, 20:22] = 1      # class 1, component B: 2x2
    mask[12, 22] = 1            # touches B only diagonally: same instance (8-connected) -> 5 px
    mask[15:20, 0:2] = 2        # class 2: rows 15..19, cols 0..1 -> 10 px
    mask[20:24, 10:20] = 255    # ignore
    _png(tmp_path / "masks" / "m.png", mask)
    payload = masks_to_coco(tmp_path / "masks", tmp_path / "images", "semantic", ["road", "car"])
    got = [(a["category_id"], a["bbox"], a["area"]) for a in payload["annotations"]]
    assert got == [(1, [3.0, 2.0, 6.0, 3.0], 18.0),
                   (1, [20.0, 10.0, 3.0, 3.0], 5.0),
                   (2, [0.0, 15.0, 2.0, 5.0], 10.0)]
    expected_b = np.zeros_like(mask)
    expected_b[10:12, 20:22] = 1
    expected_b[12, 22] = 1
    np.testing.assert_array_equal(_decoded(payload["annotations"][1], 24, 32), expected_b)
    coco = _pycocotools_loads(payload, tmp_path / "masks.json")
    assert coco.annToMask(coco.loadAnns([1])[0]).sum() == 18


def test_semantic_masks_without_names_use_found_ids_and_reject_ids_beyond_names(tmp_path):
    _image(tmp_path / "images" / "m.png", 8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 7
    _png(tmp_path / "masks" / "m.png", mask)
    payload = masks_to_coco(tmp_path / "masks", tmp_path / "images")
    assert payload["categories"] == [{"id": 7, "name": "class_7", "supercategory": ""}]
    with pytest.raises(DatasetError, match=r"m\.png.*category id 7"):
        masks_to_coco(tmp_path / "masks", tmp_path / "images", "semantic", ["a", "b"])


def test_instance_masks_decode_category_times_1000_plus_index(tmp_path):
    _image(tmp_path / "images" / "i.jpg", 20, 10)
    mask = np.zeros((10, 20), np.uint16)
    mask[0:2, 0:3] = 1001       # category 1, instance 1: 6 px
    mask[5:10, 5:6] = 1002      # category 1, instance 2: 5 px
    mask[0:1, 10:12] = 3001     # category 3 in two pieces: one instance, 2 + 4 px
    mask[8:10, 18:20] = 3001
    _png(tmp_path / "masks" / "i.png", mask)
    payload = masks_to_coco(tmp_path / "masks", tmp_path / "images", "instance", ["a", "b", "c"])
    got = [(a["category_id"], a["bbox"], a["area"]) for a in payload["annotations"]]
    assert got == [(1, [0.0, 0.0, 3.0, 2.0], 6.0),
                   (1, [5.0, 5.0, 1.0, 5.0], 5.0),
                   (3, [10.0, 0.0, 10.0, 10.0], 6.0)]
    np.testing.assert_array_equal(_decoded(payload["annotations"][2], 10, 20), (mask == 3001).astype(np.uint8))
    _pycocotools_loads(payload, tmp_path / "instances.json")
    mask[3, 3] = 7              # category 0: not a valid instance value
    _png(tmp_path / "masks" / "i.png", mask)
    with pytest.raises(DatasetError, match=r"i\.png.*instance value 7"):
        masks_to_coco(tmp_path / "masks", tmp_path / "images", "instance")


@pytest.mark.parametrize("problem, message", [
    ("missing", r"b\.png: mask PNG not found"),
    ("size", r"b\.png: mask is 9x8 but its image is 8x8"),
    ("colour", r"b\.png: mask must be a single-channel PNG"),
])
def test_mask_errors_name_the_mask_file(tmp_path, problem, message):
    for stem in ("a", "b"):
        _image(tmp_path / "images" / f"{stem}.jpg", 8, 8)
    _png(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    if problem == "size":
        _png(tmp_path / "masks" / "b.png", np.zeros((8, 9), np.uint8))
    elif problem == "colour":
        _png(tmp_path / "masks" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match=message):
        masks_to_coco(tmp_path / "masks", tmp_path / "images")


def _fractional_dataset(tmp_path: Path):
    _image(tmp_path / "images" / "p.png", 97, 61)
    _image(tmp_path / "images" / "deep" / "q.jpg", 50, 70)
    _image(tmp_path / "images" / "none.png", 16, 16)
    payload = {
        "images": [{"id": 10, "file_name": "p.png", "width": 97, "height": 61},
                   {"id": 20, "file_name": "deep/q.jpg", "width": 50, "height": 70},
                   {"id": 30, "file_name": "none.png", "width": 16, "height": 16}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [3.3, 4.7, 20.15, 10.05], "area": 202.5},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [60.01, 0.49, 36.98, 60.5], "area": 2237.3},
            {"id": 3, "image_id": 20, "category_id": 7, "bbox": [0.1, 33.333, 49.8, 0.75], "area": 37.35},
            {"id": 4, "image_id": 20, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "ant"}],
    }
    return dataset_from_dict(payload, tmp_path / "images")


def test_coco_to_yolo_to_coco_keeps_boxes_within_half_a_pixel(tmp_path):
    dataset = _fractional_dataset(tmp_path)
    written = coco_to_yolo(dataset, tmp_path / "yolo")
    assert sorted(p.relative_to(tmp_path / "yolo").as_posix() for p in written) == [
        "deep/q.txt", "none.txt", "p.txt"]
    assert (tmp_path / "yolo" / "none.txt").read_text() == ""
    # label map orders classes by COCO id: ant (3) is index 0, zebra (7) index 1
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "ant\nzebra\n"
    assert len((tmp_path / "yolo" / "deep" / "q.txt").read_text().splitlines()) == 1  # crowd skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "yolo"]  # no temporary folder left

    back = yolo_to_coco(tmp_path / "yolo", tmp_path / "images")
    names = {c["id"]: c["name"] for c in back["categories"]}
    files = {i["id"]: i["file_name"] for i in back["images"]}
    got = sorted((files[a["image_id"]], names[a["category_id"]], tuple(a["bbox"])) for a in back["annotations"])
    original_names = {c.id: c.name for c in dataset.categories}
    want = sorted((i.file_name, original_names[a.category_id], a.bbox)
                  for i in dataset.images for a in i.annotations if not a.iscrowd)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[2], w[2], atol=0.5)
    _pycocotools_loads(back, tmp_path / "back.json")


def test_coco_to_yolo_rejects_two_images_writing_one_label_file(tmp_path):
    dataset = _fractional_dataset(tmp_path)
    clash = dataset_from_dict({**dataset.to_dict(), "images": dataset.to_dict()["images"] + [
        {"id": 40, "file_name": "p.jpg", "width": 5, "height": 5}]}, tmp_path / "images")
    with pytest.raises(DatasetError, match=r"p\.png.*p\.jpg"):
        coco_to_yolo(clash, tmp_path / "yolo")


def test_cli_converts_yolo_to_coco_in_a_subprocess(yolo_dir, tmp_path):
    out = tmp_path / "out" / "converted.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "detseg", "data", "convert", "--from", "yolo", "--input",
         str(yolo_dir / "labels"), "--images", str(yolo_dir / "images"), "--classes", "person,car",
         "--include-unlabeled", "--overwrite", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 images, 3 annotations, 2 categories" in result.stdout
    assert len(COCO(str(out)).getAnnIds()) == 3
    assert [c.name for c in load_coco(out, yolo_dir / "images").categories] == ["person", "car"]

    (yolo_dir / "labels" / "a.txt").write_text("9 0.5 0.5 0.1 0.1\n")
    failed = subprocess.run(result.args, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert failed.returncode != 0
    assert "a.txt: line 1: class index 9" in failed.stderr
    assert "Traceback" not in failed.stderr
