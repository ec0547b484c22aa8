"""COCO validation: a clean dataset passes; every fault is named by record and kind; the CLI.

Each test writes a small real dataset (PNG files + COCO JSON) into tmp_path, breaks one
thing, and checks the report names the annotation / image file / category and the field.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from detseg.data.coco import load_coco
from detseg.data.segmentation_checks import compressed_rle_runs
from detseg.data.validate import validate_coco

REPO_ROOT = Path(__file__).resolve().parents[2]
# (file name, width, height) of the clean dataset's images; image ids are 1, 2, 3.
IMAGES = (("img_1.png", 64, 48), ("img_2.png", 64, 48), ("img_3.png", 32, 40))
ANN_10 = "annotation 10 (image 1 'img_1.png')"  # polygon
ANN_11 = "annotation 11 (image 2 'img_2.png')"  # uncompressed RLE
ANN_12 = "annotation 12 (image 3 'img_3.png')"  # compressed RLE, iscrowd=1
ANN_13 = "annotation 13 (image 1 'img_1.png')"  # box only


def _uncompressed_runs(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts: alternating 0/1 run lengths, column-major, 0s first."""
    runs, current, length = [], 0, 0
    for value in mask.flatten(order="F"):
        if value != current:
            runs.append(length)
            current, length = value, 0
        length += 1
    return runs + [length]


def _rectangle_mask(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[rows, cols] = 1
    return mask


def _clean_payload() -> dict:
    mask_11 = _rectangle_mask(48, 64, slice(5, 13), slice(10, 22))
    mask_12 = _rectangle_mask(40, 32, slice(0, 40), slice(3, 30))
    compressed = coco_mask.encode(np.asfortranarray(mask_12))
    return {
        "info": {"description": "validation fixture"},
        "images": [{"id": i + 1, "file_name": name, "width": w, "height": h}
                   for i, (name, w, h) in enumerate(IMAGES)],
        "categories": [{"id": 3, "name": "circle"}, {"id": 11, "name": "square"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 10], "area": 200,
             "iscrowd": 0, "segmentation": [[4, 6, 24, 6, 24, 16, 4, 16]]},
            {"id": 11, "image_id": 2, "category_id": 11, "bbox": [10, 5, 12, 8], "area": 96,
             "iscrowd": 0, "segmentation": {"size": [48, 64], "counts": _uncompressed_runs(mask_11)}},
            {"id": 12, "image_id": 3, "category_id": 3, "bbox": [3, 0, 27, 40], "area": 1080,
             "iscrowd": 1, "segmentation": {"size": [40, 32], "counts": compressed["counts"].decode("ascii")}},
            {"id": 13, "image_id": 1, "category_id": 11, "bbox": [40.5, 20, 10.25, 8]},
        ],
    }


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict]:
    """`tmp_path/annotations/instances.json` + `tmp_path/images/*.png`, and the payload."""
    (tmp_path / "images").mkdir()
    for k, (name, width, height) in enumerate(IMAGES):
        pixels = np.full((height, width, 3), 40 * k, np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / name)
    payload = _clean_payload()
    _write(payload, tmp_path / "annotations" / "instances.json")
    return tmp_path / "annotations" / "instances.json", payload


def _write(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))  # NaN/Infinity written as JSON's extensions


def test_clean_dataset_has_no_problems_and_loads(dataset):
    path, payload = dataset
    report = validate_coco(path)  # image folder found by default_image_dir
    assert report.problems == [] and report.ok
    assert report.format() == "OK: 3 images, 4 annotations, 2 categories"
    loaded = load_coco(path)
    crowd = loaded.images[2].annotations[0]
    assert crowd.iscrowd == 1
    assert crowd.mask(40, 32).sum() == 27 * 40


def test_boxes_and_polygons_within_tolerance_are_accepted(dataset):
    path, payload = dataset
    payload["annotations"][3]["bbox"] = [-0.6, -0.4, 65.2, 48.9]  # 0.6 px past each edge
    payload["annotations"][0]["segmentation"] = [[-0.5, 0, 64.5, 0, 64.5, 48.5]]
    _write(payload, path)
    assert validate_coco(path).problems == []


def _delete(root: Path, name: str) -> None:
    (root / "images" / name).unlink()


def _set(section: str, index: int, key: str, value):
    def mutate(payload, root):
        payload[section][index][key] = value
    return mutate


def _remove(section: str, index: int, key: str):
    def mutate(payload, root):
        del payload[section][index][key]
    return mutate


def _set_segmentation(index: int, key: str, value):
    def mutate(payload, root):
        payload["annotations"][index]["segmentation"][key] = value
    return mutate


def _rewrite_image(name: str, data: bytes | None = None, size: tuple[int, int] | None = None, fmt="PNG"):
    def mutate(payload, root):
        target = root / "images" / name
        if size is not None:
            Image.new("RGB", size, (9, 9, 9)).save(target, format=fmt)
        if data is not None:
            target.write_bytes(data)
    return mutate


def _truncate_image(name: str, fmt: str):
    def mutate(payload, root):
        for image in payload["images"]:
            if image["file_name"] == "img_1.png":
                image["file_name"] = name
        target = root / "images" / name
        noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
        Image.fromarray(noise).save(target, format=fmt)
        target.write_bytes(target.read_bytes()[: target.stat().st_size * 2 // 3])
    return mutate


NAN, INF = float("nan"), float("inf")
SRC = "{json}"
FILE = "{images}/"
# (mutation, where, field, words in the message)
FAULTS = {
    "missing key": (lambda p, r: p.pop("categories"), SRC, "categories", "missing top-level key"),
    "section not an array": (lambda p, r: p.update(images={}), SRC, "images", "must be an array"),
    "image not an object": (lambda p, r: p["images"].__setitem__(1, "img_2.png"), "images[1]", "record",
                            "JSON object"),
    "image missing width": (_remove("images", 0, "width"), "image 1 'img_1.png'", "width", "missing"),
    "image zero height": (_set("images", 2, "height", 0), "image 3 'img_3.png'", "height", "positive"),
    "image width float": (_set("images", 2, "width", 32.5), "image 3 'img_3.png'", "width", "integer"),
    "image missing file_name": (_remove("images", 1, "file_name"), "image 2", "file_name", "missing"),
    "image id a string": (_set("images", 0, "id", "1"), "images[0]", "id", "must be an integer"),
    "annotation not an object": (lambda p, r: p["annotations"].append(None), "annotations[4]", "record",
                                 "JSON object"),
    "annotation missing id": (_remove("annotations", 1, "id"), "annotations[1] (image 2 'img_2.png')", "id",
                              "missing"),
    "annotation missing image_id": (_remove("annotations", 0, "image_id"), "annotation 10", "image_id",
                                    "missing"),
    "annotation missing category_id": (_remove("annotations", 0, "category_id"), ANN_10, "category_id",
                                       "missing"),
    "annotation missing bbox": (_remove("annotations", 0, "bbox"), ANN_10, "bbox", "missing"),
    "category missing name": (_remove("categories", 1, "name"), "category 11", "name", "missing"),
    "category missing id": (_remove("categories", 1, "id"), "categories[1]", "id", "missing"),
    "category not an object": (lambda p, r: p["categories"].append([5, "x"]), "categories[2]", "record",
                               "JSON object"),
    "duplicate image id": (_set("images", 2, "id", 2), "image 2 'img_3.png'", "id", "duplicate id 2"),
    "duplicate file name": (_set("images", 2, "file_name", "img_1.png"), "image 3 'img_1.png'", "file_name",
                            "duplicate"),
    "duplicate annotation id": (_set("annotations", 2, "id", 10), "annotation 10 (image 3 'img_3.png')", "id",
                                "duplicate id 10"),
    "duplicate category id": (_set("categories", 1, "id", 3), "category 3", "id", "duplicate id 3"),
    "unknown image": (_set("annotations", 0, "image_id", 99), "annotation 10 (image 99)", "image_id",
                      "image 99 is not in images"),
    "unknown category": (_set("annotations", 0, "category_id", 5), ANN_10, "category_id",
                         "category 5 is not in categories"),
    "bbox 3 numbers": (_set("annotations", 0, "bbox", [4, 6, 20]), ANN_10, "bbox", "4 numbers"),
    "bbox with a string": (_set("annotations", 0, "bbox", [4, "6", 20, 10]), ANN_10, "bbox", "4 numbers"),
    "bbox not a list": (_set("annotations", 0, "bbox", {"x": 4}), ANN_10, "bbox", "4 numbers"),
    "bbox zero width": (_set("annotations", 3, "bbox", [40, 20, 0, 8]), ANN_13, "bbox", "positive"),
    "bbox negative height": (_set("annotations", 3, "bbox", [40, 20, 5, -2]), ANN_13, "bbox", "positive"),
    "bbox past right edge": (_set("annotations", 3, "bbox", [40, 20, 26, 8]), ANN_13, "bbox", "outside"),
    "bbox past top edge": (_set("annotations", 3, "bbox", [40, -2, 5, 8]), ANN_13, "bbox", "outside"),
    "bbox past bottom edge": (_set("annotations", 2, "bbox", [3, 0, 27, 41.5]), ANN_12, "bbox", "outside"),
    "bbox NaN": (_set("annotations", 3, "bbox", [40, 20, NAN, 8]), ANN_13, "bbox", "NaN"),
    "bbox infinity": (_set("annotations", 3, "bbox", [40, -INF, 5, 8]), ANN_13, "bbox", "infinity"),
    "area infinity": (_set("annotations", 0, "area", INF), ANN_10, "area", "infinity"),
    "area NaN": (_set("annotations", 0, "area", NAN), ANN_10, "area", "NaN"),
    "area negative": (_set("annotations", 0, "area", -3), ANN_10, "area", "negative"),
    "iscrowd 2": (_set("annotations", 0, "iscrowd", 2), ANN_10, "iscrowd", "0 or 1"),
    "iscrowd boolean": (_set("annotations", 0, "iscrowd", True), ANN_10, "iscrowd", "0 or 1"),
    "polygon NaN": (_set("annotations", 0, "segmentation", [[4, 6, 24, NAN, 24, 16]]), ANN_10,
                    "segmentation", "NaN"),
    "polygon infinity": (_set("annotations", 0, "segmentation", [[4, 6, 24, 6, INF, 16]]), ANN_10,
                         "segmentation", "infinity"),
    "polygon odd coordinates": (_set("annotations", 0, "segmentation", [[4, 6, 24, 6, 24, 16, 4]]), ANN_10,
                                "segmentation", "odd number of coordinates (7)"),
    "polygon of 2 points": (_set("annotations", 0, "segmentation", [[4, 6, 24, 6, 24, 16, 4, 16], [1, 1, 2, 2]]),
                            ANN_10, "segmentation", "polygon 1 has 2 point(s)"),
    "polygon not nested": (_set("annotations", 0, "segmentation", [4, 6, 24, 6, 24, 16]), ANN_10,
                           "segmentation", "polygon 0 must be a list of numbers"),
    "polygon outside image": (_set("annotations", 0, "segmentation", [[4, 6, 90, 6, 24, 16]]), ANN_10,
                              "segmentation", "outside the 64x48 image"),
    "segmentation a string": (_set("annotations", 0, "segmentation", "4 6 24 6"), ANN_10, "segmentation",
                              "polygons or an RLE"),
    "RLE size swapped": (_set_segmentation(1, "size", [64, 48]), ANN_11, "segmentation",
                         "does not match the image's [height, width] [48, 64]"),
    "RLE without counts": (lambda p, r: p["annotations"][2]["segmentation"].pop("counts"), ANN_12,
                           "segmentation", "'size' and 'counts'"),
    "uncompressed RLE short": (lambda p, r: p["annotations"][1]["segmentation"]["counts"].pop(), ANN_11,
                               "segmentation", "counts cover"),
    "uncompressed RLE negative": (_set_segmentation(1, "counts", [-1, 3073]), ANN_11, "segmentation",
                                  "non-negative integers"),
    "uncompressed RLE NaN": (_set_segmentation(1, "counts", [NAN, 3072]), ANN_11, "segmentation",
                             "non-negative integers"),
    "compressed RLE bad characters": (_set_segmentation(2, "counts", "!!~~"), ANN_12, "segmentation",
                                      "not valid"),
    "compressed RLE empty": (_set_segmentation(2, "counts", ""), ANN_12, "segmentation",
                             "cover 0 pixels but size [40, 32] has 1280"),
    "compressed RLE extra run": (lambda p, r: p["annotations"][2]["segmentation"].update(
        counts=p["annotations"][2]["segmentation"]["counts"] + "5"), ANN_12, "segmentation", "counts cover"),
    "image file missing": (lambda p, r: _delete(r, "img_2.png"), FILE + "img_2.png", "file", "not found"),
    "image file is garbage": (_rewrite_image("img_1.png", data=b"not a png at all"), FILE + "img_1.png",
                              "file", "cannot be decoded"),
    "image file is empty": (_rewrite_image("img_3.png", data=b""), FILE + "img_3.png", "file",
                            "cannot be decoded"),
    "PNG truncated": (_truncate_image("img_1.png", "PNG"), FILE + "img_1.png", "file", "cannot be decoded"),
    "JPEG truncated": (_truncate_image("img_1.jpg", "JPEG"), FILE + "img_1.jpg", "file", "cannot be decoded"),
    "image size differs": (_rewrite_image("img_3.png", size=(40, 32)), FILE + "img_3.png", "size",
                           "real size 40x32 differs from the declared 32x40"),
}


def _find(report, where: str, field: str, words: str):
    return [p for p in report.problems if p.where == where and p.field == field and words in p.message]


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_each_fault_is_reported_with_its_record_and_kind(dataset, fault):
    path, payload = dataset
    mutate, where, field, words = FAULTS[fault]
    mutate(payload, path.parent.parent)
    _write(payload, path)
    report = validate_coco(path)
    where = where.format(json=path, images=path.parent.parent / "images")
    assert not report.ok
    found = _find(report, where, field, words)
    assert found, f"expected {where}: {field}: ...{words}... in\n{report.format()}"
    assert f"{where}: {field}: " in report.format()
    assert not [p for p in report.problems if p.field == "validator"], report.format()


def test_every_problem_is_collected_not_just_the_first(dataset):
    path, payload = dataset
    root = path.parent.parent
    payload["annotations"][0]["category_id"] = 5
    payload["annotations"][3]["bbox"] = [40, 20, 30, 8]
    payload["annotations"][1]["iscrowd"] = 7
    payload["categories"][1]["name"] = ""
    _write(payload, path)
    _delete(root, "img_3.png")
    report = validate_coco(path)
    assert _find(report, ANN_10, "category_id", "category 5")
    assert _find(report, ANN_13, "bbox", "outside")
    assert _find(report, ANN_11, "iscrowd", "got a number 7")
    assert _find(report, "category 11", "name", "non-empty")
    assert _find(report, str(root / "images" / "img_3.png"), "file", "not found")
    assert len(report.problems) == 5
    summary = report.format().splitlines()[-1]
    assert summary.startswith(f"FAILED: 5 problem(s) in {path}")
    assert "3 images, 4 annotations, 2 categories" in summary


def test_no_image_check_skips_the_files(dataset):
    path, _ = dataset
    root = path.parent.parent
    _delete(root, "img_1.png")
    (root / "images" / "img_2.png").write_bytes(b"garbage")
    assert validate_coco(path, check_images=False).ok
    flagged = {p.where for p in validate_coco(path).problems}
    assert flagged == {str(root / "images" / "img_1.png"), str(root / "images" / "img_2.png")}


def test_explicit_image_dir_is_used(dataset, tmp_path):
    path, _ = dataset
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "images"), moved)
    assert validate_coco(path, image_dir=moved).ok
    assert not validate_coco(path).ok  # the default folder no longer holds the images


def test_missing_image_folder_is_one_problem(dataset, tmp_path):
    path, _ = dataset
    report = validate_coco(path, image_dir=tmp_path / "no_such_folder")
    assert [str(p) for p in report.problems] == [f"{tmp_path / 'no_such_folder'}: images: "
                                                 "image folder not found (pass the folder with --images)"]


@pytest.mark.parametrize("text, field, words", [
    ('{"images": [],\n "annotations": [\n  {"id": 1,}\n ]}', "json", "invalid JSON at line 3 column"),
    ('[{"images": []}]', "top level", "must be a JSON object"),
    ('null', "top level", "got null"),
    ('', "json", "invalid JSON at line 1 column 1"),
    ('[' * 100_000, "json", "nested too deeply"),
    ('{"images": [{"id": ' + '9' * 5000 + '}]}', "json", "cannot be parsed"),
])
def test_unparsable_or_wrong_top_level_json_is_reported(tmp_path, text, field, words):
    path = tmp_path / "instances.json"
    path.write_text(text)
    report = validate_coco(path)
    assert _find(report, str(path), field, words), report.format()
    assert report.format().splitlines()[-1] == f"FAILED: 1 problem(s) in {path} ({field}: 1)"


def test_missing_unreadable_and_non_utf8_files_are_reported(tmp_path):
    assert _find(validate_coco(tmp_path / "nope.json"), str(tmp_path / "nope.json"), "file", "not found")
    assert _find(validate_coco(tmp_path), str(tmp_path), "file", "cannot be read")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"images": "caf\xe9"}'.encode("latin-1"))
    assert _find(validate_coco(latin), str(latin), "json", "not UTF-8")


WEIRD_VALUES = (None, True, "x", -1, 1.5, NAN, [], {}, [[]], [None], {"size": None}, [1, [2]])


def test_odd_values_anywhere_are_reported_never_raised(dataset):
    path, clean = dataset
    for section, index in (("images", 0), ("annotations", 0), ("annotations", 2), ("categories", 0)):
        for key in list(clean[section][index]):
            for value in WEIRD_VALUES:
                payload = json.loads(json.dumps(clean))
                payload[section][index][key] = value
                _write(payload, path)
                report = validate_coco(path, check_images=False)
                assert not [p for p in report.problems if p.field == "validator"], report.format()


def test_huge_declared_image_is_checked_without_decoding_masks(tmp_path):
    side = 1_000_000  # a decoded mask would need 10**12 bytes
    payload = {"images": [{"id": 1, "file_name": "a.png", "width": side, "height": side}],
               "categories": [{"id": 1, "name": "a"}],
               "annotations": [
                   {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                    "segmentation": [[0, 0, 9, 0, 9, 9]]},
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                    "segmentation": {"size": [side, side], "counts": [5, side * side - 5]}},
                   {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                    "segmentation": {"size": [side, side], "counts": [5, 5]}}]}
    _write(payload, tmp_path / "huge.json")
    report = validate_coco(tmp_path / "huge.json", check_images=False)
    assert [(p.where, p.field) for p in report.problems] == [("annotation 3 (image 1 'a.png')", "segmentation")]


def test_compressed_rle_runs_rebuild_pycocotools_masks():
    rng = np.random.default_rng(3)
    for height, width, density in ((1, 1, 0.5), (7, 5, 0.3), (40, 32, 0.5), (60, 90, 0.02), (30, 30, 1.0)):
        mask = (rng.random((height, width)) < density).astype(np.uint8)
        counts = coco_mask.encode(np.asfortranarray(mask))["counts"].decode("ascii")
        runs = compressed_rle_runs(counts)
        assert runs == _uncompressed_runs(mask)
    assert compressed_rle_runs("ab~") is None  # '~' is beyond the 64 codes
    assert compressed_rle_runs("1\\") is None  # ends with a continuation group
    assert compressed_rle_runs("") == []


def test_progress_bar_only_for_many_images(tmp_path, capfd):
    (tmp_path / "images").mkdir()
    names = [f"{k:04d}.png" for k in range(201)]
    for name in names:
        Image.new("L", (4, 4)).save(tmp_path / "images" / name)
    payload = {"images": [{"id": k, "file_name": n, "width": 4, "height": 4} for k, n in enumerate(names)],
               "annotations": [], "categories": []}
    _write(payload, tmp_path / "many.json")
    assert validate_coco(tmp_path / "many.json").ok
    assert "checking images" in capfd.readouterr().err
    payload["images"] = payload["images"][:3]
    _write(payload, tmp_path / "few.json")
    assert validate_coco(tmp_path / "few.json").ok
    assert capfd.readouterr().err == ""


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detseg", "data", "validate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_and_reports(dataset):
    path, payload = dataset
    images = str(path.parent.parent / "images")
    clean = _run_cli(str(path), "--images", images)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines() == [f"image folder: {images}", "OK: 3 images, 4 annotations, 2 categories"]

    payload["annotations"][0]["bbox"] = [4, 6, 70, 10]
    _write(payload, path)
    _delete(path.parent.parent, "img_2.png")
    broken = _run_cli(str(path), "--images", images)
    assert broken.returncode == 1
    assert f"{ANN_10}: bbox:" in broken.stdout
    assert "img_2.png: file: not found" in broken.stdout
    assert "Traceback" not in broken.stderr + broken.stdout
    assert _run_cli(str(path), "--images", images, "--no-image-check").returncode == 1  # the bbox remains

    path.write_text('{"images": [],\n\n  "annotations": [}')
    bad_json = _run_cli(str(path), "--images", images)
    assert bad_json.returncode == 1
    assert "invalid JSON at line 3" in bad_json.stdout
    assert "Traceback" not in bad_json.stderr + bad_json.stdout
