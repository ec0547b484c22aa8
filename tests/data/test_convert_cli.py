"""`detseg data convert` through the real entry point: nothing in the data changes silently.

Each case of issue 14 on tiny files in tmp_path: the strict default exits 1 and writes
nothing, naming the file/record and the flag that accepts the change; the flag makes the
change and reports it (count and examples); existing outputs need --overwrite.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detseg.cli import main
from detseg.data.coco import load_coco, write_coco
from detseg.data.validate import validate_coco

EXIT_REPAIRS_NEEDED = 1
EXIT_ERROR = 2


def _image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("detseg")]
    assert len(lines) == 1, err
    return lines[0]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ COCO -> YOLO

@pytest.fixture
def coco_file(tmp_path):
    """Two 100x50 images; six objects, one with a negative width, two with polygons."""
    _image(tmp_path / "images" / "a.png", 100, 50)
    _image(tmp_path / "images" / "b.png", 100, 50)
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "segmentation": square},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10], "area": 100},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [60, 20, -8, 10], "area": 80},  # negative width
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 100, 50], "area": 5000, "segmentation": square},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [70, 30, 10, 10], "area": 100},
        {"id": 6, "image_id": 2, "category_id": 2, "bbox": [5, 5, 4, 4], "area": 16},
    ]
    payload = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50},
                          {"id": 2, "file_name": "b.png", "width": 100, "height": 50}],
               "annotations": annotations, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    write_coco(payload, tmp_path / "coco.json")
    return tmp_path / "coco.json"


def _to_yolo(capsys, coco_file: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    return _run(capsys, "data", "convert", "--from", "coco", "--to", "yolo", "--input", coco_file,
                "--images", coco_file.parent / "images", "--out", out, *flags)


def test_coco_to_yolo_negative_width_stops_strict_and_is_dropped_and_reported_on_request(coco_file, capsys):
    out = coco_file.parent / "labels"
    code, stdout, err = _to_yolo(capsys, coco_file, out)
    assert code == EXIT_REPAIRS_NEEDED
    line = _error_line(err)
    assert "nothing was written" in line and "annotation id 3 of a.png" in line and "--drop-invalid" in line
    assert not out.exists() and _entries(coco_file.parent) == ["coco.json", "images"]

    code, stdout, err = _to_yolo(capsys, coco_file, out, "--drop-invalid")
    assert code == 0, err
    lines = [line for p in out.glob("*.txt") if p.name != "classes.txt" for line in p.read_text().splitlines()]
    assert len(lines) == 5  # 6 objects, 1 dropped: and the output says so
    assert "1 box(es) with no area inside their image dropped (annotation id 3 of a.png" in stdout
    assert "2 segmentations not written: YOLO detection labels hold boxes only" in stdout


def test_coco_to_yolo_existing_folder_needs_overwrite_which_empties_it(coco_file, capsys):
    out = coco_file.parent / "labels"
    out.mkdir()
    (out / "old.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (out / "classes.txt").write_text("mine\n")
    code, _, err = _to_yolo(capsys, coco_file, out, "--drop-invalid")
    assert code == EXIT_ERROR
    assert "--overwrite" in _error_line(err) and str(out) in _error_line(err)
    assert (out / "classes.txt").read_text() == "mine\n" and _entries(out) == ["classes.txt", "old.txt"]

    code, _, err = _to_yolo(capsys, coco_file, out, "--drop-invalid", "--overwrite")
    assert code == 0, err
    assert _entries(out) == ["a.txt", "b.txt", "classes.txt"]  # old.txt is gone
    assert (out / "classes.txt").read_text() == "cat\ndog\n"
    assert _entries(coco_file.parent) == ["coco.json", "images", "labels"]  # no staging folder left


def test_coco_to_yolo_refuses_to_replace_the_folder_holding_its_input(coco_file, capsys):
    code, _, err = _to_yolo(capsys, coco_file, coco_file.parent, "--drop-invalid", "--overwrite")
    assert code == EXIT_ERROR and "holds the input" in _error_line(err)
    assert (coco_file.parent / "images" / "a.png").is_file()


def test_coco_to_yolo_failing_midway_leaves_the_previous_folder_and_no_temporary_files(coco_file, capsys):
    out = coco_file.parent / "labels"
    assert _to_yolo(capsys, coco_file, out, "--drop-invalid")[0] == 0
    before = {p.name: p.read_text() for p in out.iterdir()}
    # A real fault while writing: "x.png" gives the file x.txt, "x.txt/y.png" needs a folder x.txt.
    payload = json.loads(coco_file.read_text())
    payload["images"] += [{"id": 3, "file_name": "x.png", "width": 10, "height": 10},
                          {"id": 4, "file_name": "x.txt/y.png", "width": 10, "height": 10}]
    coco_file.write_text(json.dumps(payload))
    code, _, err = _to_yolo(capsys, coco_file, out, "--drop-invalid", "--overwrite")
    assert code == EXIT_ERROR, err
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    assert _entries(coco_file.parent) == ["coco.json", "images", "labels"]


# ------------------------------------------------------------------ VOC -> COCO

def _voc(xml_dir: Path, stem: str, boxes: list[tuple[int, int, int, int]], size=(64, 48)) -> Path:
    xml_dir.mkdir(parents=True, exist_ok=True)
    objects = "".join(f"<object><name>cat</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    path = xml_dir / f"{stem}.xml"
    path.write_text(f"<annotation><filename>{stem}.png</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height></size>{objects}</annotation>")
    return path


@pytest.fixture
def voc_dir(tmp_path):
    _image(tmp_path / "images" / "a.png", 64, 48)
    _image(tmp_path / "images" / "b.png", 64, 48)
    _voc(tmp_path / "xml", "a", [(11, 11, 20, 20)])
    return tmp_path


def _from_voc(capsys, root: Path, *flags: str) -> tuple[int, str, str]:
    return _run(capsys, "data", "convert", "--from", "voc", "--input", root / "xml", "--images",
                root / "images", "--out", root / "coco.json", *flags)


def test_voc_box_outside_the_image_stops_strict_and_is_dropped_on_request(voc_dir, capsys):
    bad = _voc(voc_dir / "xml", "b", [(5, 5, 10, 10), (129, 129, 140, 140)])
    code, _, err = _from_voc(capsys, voc_dir)
    assert code == EXIT_REPAIRS_NEEDED
    line = _error_line(err)
    assert f"{bad} <object> #2 (cat)" in line and "outside the 64x48 image" in line and "--drop-invalid" in line
    assert not (voc_dir / "coco.json").exists()

    code, out, err = _from_voc(capsys, voc_dir, "--drop-invalid")
    assert code == 0, err
    assert "1 box(es) with no area inside their image dropped" in out and str(bad) in out
    boxes = [a["bbox"] for a in json.loads((voc_dir / "coco.json").read_text())["annotations"]]
    assert boxes == [[10.0, 10.0, 10.0, 10.0], [4.0, 4.0, 6.0, 6.0]]  # no [128, 128, 0, 0]
    assert validate_coco(voc_dir / "coco.json", voc_dir / "images").ok


def test_voc_box_reaching_outside_is_clipped_only_with_clip_boxes_and_reported(voc_dir, capsys):
    _voc(voc_dir / "xml", "b", [(0, 40, 70, 48)])  # 0-based xmin 0 -> x = -1; xmax 70 > 64
    code, _, err = _from_voc(capsys, voc_dir)
    assert code == EXIT_REPAIRS_NEEDED and "--clip-boxes" in _error_line(err)
    code, out, err = _from_voc(capsys, voc_dir, "--clip-boxes")
    assert code == 0, err
    assert "1 box(es) clipped to their image (" in out and "b.xml <object> #1 (cat)" in out
    payload = json.loads((voc_dir / "coco.json").read_text())
    assert payload["annotations"][1]["bbox"] == [0.0, 39.0, 64.0, 9.0]


def test_an_existing_output_file_is_replaced_only_with_overwrite(voc_dir, capsys):
    (voc_dir / "coco.json").write_text("precious")
    code, _, err = _from_voc(capsys, voc_dir)
    assert code == EXIT_ERROR and "--overwrite" in _error_line(err)
    assert (voc_dir / "coco.json").read_text() == "precious"
    code, _, err = _from_voc(capsys, voc_dir, "--overwrite")
    assert code == 0, err
    assert len(load_coco(voc_dir / "coco.json").annotations) == 1
    assert _entries(voc_dir) == ["coco.json", "images", "xml"]  # no temporary file beside it


@pytest.mark.parametrize("out, words", [
    ("images", "is a folder; name the file to write"),          # was IsADirectoryError '.imgs.x.tmp' -> 'imgs'
    ("afile/coco.json", "afile is a file, not a folder"),      # was [Errno 17] File exists: 'afile'
])
def test_output_paths_that_cannot_be_written_are_one_line_in_plain_words(voc_dir, capsys, out, words):
    (voc_dir / "afile").write_text("")
    code, _, err = _run(capsys, "data", "convert", "--from", "voc", "--input", voc_dir / "xml",
                        "--images", voc_dir / "images", "--out", voc_dir / out)
    assert code == EXIT_ERROR and words in _error_line(err) and "Errno" not in err


# ------------------------------------------------------------------ YOLO -> COCO

@pytest.fixture
def yolo_dir(tmp_path):
    for stem in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{stem}.png", 40, 20)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    return tmp_path


def _from_yolo(capsys, root: Path, *flags: str) -> tuple[int, str, str]:
    return _run(capsys, "data", "convert", "--from", "yolo", "--input", root / "labels", "--images",
                root / "images", "--out", root / "coco.json", *flags)


def test_yolo_unlabelled_images_are_added_only_with_include_unlabeled(yolo_dir, capsys):
    code, _, err = _from_yolo(capsys, yolo_dir, "--classes", "cell")
    assert code == EXIT_REPAIRS_NEEDED
    line = _error_line(err)
    assert "2 image(s) in the image folder have no label file" in line and "--include-unlabeled" in line
    assert str(yolo_dir / "images" / "b.png") in line and not (yolo_dir / "coco.json").exists()
    code, out, err = _from_yolo(capsys, yolo_dir, "--classes", "cell", "--include-unlabeled")
    assert code == 0, err
    assert "3 images, 1 annotations" in out and "2 image(s) without a label file added" in out
    (yolo_dir / "labels" / "b.txt").write_text("")  # an empty label file: an image known to be empty
    (yolo_dir / "labels" / "c.txt").write_text("0 0.95 0.5 0.2 0.2\n")  # reaches past the right edge
    code, _, err = _from_yolo(capsys, yolo_dir, "--classes", "cell", "--overwrite")
    assert code == EXIT_REPAIRS_NEEDED and "c.txt: line 1" in _error_line(err) and "--clip-boxes" in err
    code, out, err = _from_yolo(capsys, yolo_dir, "--classes", "cell", "--overwrite", "--clip-boxes")
    assert code == 0 and "1 box(es) clipped to their image" in out, err


@pytest.mark.parametrize("classes, words", [
    ("", "--classes is empty"),                       # was "class index 0 is out of range 0..-1"
    (",", "--classes is empty"),
    ("nofile.txt", "--classes nofile.txt: not found"),  # was taken as a class named "nofile.txt"
    ("lists/names", "--classes lists/names: not found"),
])
def test_bad_classes_values_are_named(yolo_dir, capsys, classes, words):
    code, _, err = _from_yolo(capsys, yolo_dir, "--classes", classes, "--include-unlabeled")
    assert code == EXIT_ERROR and words in _error_line(err)
    assert not (yolo_dir / "coco.json").exists()


def test_files_with_a_byte_order_mark_are_read(yolo_dir, capsys):
    (yolo_dir / "names.txt").write_text("\ufeffcell\n", encoding="utf-8")
    (yolo_dir / "labels" / "a.txt").write_text("\ufeff0 0.5 0.5 0.5 0.5\n", encoding="utf-8")
    code, _, err = _from_yolo(capsys, yolo_dir, "--classes", yolo_dir / "names.txt", "--include-unlabeled")
    assert code == 0, err
    payload = json.loads((yolo_dir / "coco.json").read_text())
    assert payload["categories"][0]["name"] == "cell" and len(payload["annotations"]) == 1
    with_bom = yolo_dir / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + (yolo_dir / "coco.json").read_bytes())
    code, out, err = _run(capsys, "data", "validate", with_bom, "--images", yolo_dir / "images")
    assert code == 0 and "OK: 3 images, 1 annotations" in out, out + err


# ------------------------------------------------------------------ label-map masks

def test_label_map_masks_convert_one_instance_per_value(tmp_path, capsys):
    _image(tmp_path / "images" / "cells.png", 16, 12)
    labels = np.zeros((12, 16), np.uint16)
    labels[1:3, 2:5] = 1        # x 2..4, y 1..2 -> [2, 1, 3, 2]
    labels[6:10, 10:12] = 2     # [10, 6, 2, 4]
    labels[11, 0] = 3           # one pixel -> [0, 11, 1, 1]
    labels[0, 15] = 3           # ...and another of the same object -> [0, 0, 16, 12]
    (tmp_path / "masks").mkdir()
    Image.fromarray(labels).save(tmp_path / "masks" / "cells.png")
    argv = ["data", "convert", "--from", "masks", "--mask-kind", "labels", "--input", tmp_path / "masks",
            "--images", tmp_path / "images", "--out", tmp_path / "coco.json"]
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_ERROR and "--classes" in _error_line(err)
    code, out, err = _run(capsys, *argv, "--classes", "nucleus")
    assert code == 0, err
    payload = json.loads((tmp_path / "coco.json").read_text())
    assert payload["categories"] == [{"id": 1, "name": "nucleus", "supercategory": ""}]
    assert [(a["category_id"], a["bbox"], a["area"]) for a in payload["annotations"]] == [
        (1, [2.0, 1.0, 3.0, 2.0], 6.0), (1, [10.0, 6.0, 2.0, 4.0], 8.0), (1, [0.0, 0.0, 16.0, 12.0], 2.0)]
    assert validate_coco(tmp_path / "coco.json", tmp_path / "images").ok


def test_repair_flags_that_do_not_apply_are_refused(tmp_path, capsys):
    code, _, err = _run(capsys, "data", "convert", "--from", "masks", "--input", tmp_path, "--images",
                        tmp_path, "--out", tmp_path / "x.json", "--clip-boxes")
    assert code == EXIT_ERROR and "--clip-boxes does not apply to --from masks" in _error_line(err)
