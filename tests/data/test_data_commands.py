"""`detseg data validate / synth / split` speak the command line's language (issue 14).

Run in-process through `detseg.cli.main` on tiny files: messages name flags
(`--overwrite`, `--num-images`), never Python arguments or errno texts.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detseg.cli import main
from detseg.data.validate import PROBLEMS_SHOWN_PER_KIND

EXIT_ERROR = 2


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("detseg")]
    assert len(lines) == 1, err
    return lines[0]


def _dataset(root: Path, num_images: int, bad_boxes: int = 0) -> Path:
    """`root/annotations/instances.json` + `root/images/`, 8x8 images, one box each
    (the first `bad_boxes` of them reaching far outside the image)."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    images, annotations = [], []
    for k in range(num_images):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"i{k}.png")
        images.append({"id": k + 1, "file_name": f"i{k}.png", "width": 8, "height": 8})
        box = [0, 0, 50, 4] if k < bad_boxes else [1, 1, 4, 4]
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": box, "area": 16})
    path = root / "annotations" / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


def test_validate_says_which_image_folder_it_searched_or_that_images_were_not_checked(tmp_path, capsys):
    path = _dataset(tmp_path, 2)
    code, out, _ = _run(capsys, "data", "validate", path)
    assert code == 0
    assert out.splitlines()[0] == (f"image folder: {tmp_path / 'images'} "
                                   f"(found from the annotations file's place; choose with --images)")
    (tmp_path / "images" / "i1.png").unlink()
    code, out, _ = _run(capsys, "data", "validate", path)
    assert code == 1 and f"image folder: {tmp_path / 'images'}" in out and "i1.png: file: not found" in out
    code, out, _ = _run(capsys, "data", "validate", path, "--no-image-check")
    assert code == 0 and out.splitlines() == ["image files: not checked (--no-image-check)",
                                              "OK: 2 images, 2 annotations, 1 categories"]


def test_validate_shows_the_first_problems_of_a_kind_and_counts_the_rest(tmp_path, capsys):
    extra = 5
    path = _dataset(tmp_path, PROBLEMS_SHOWN_PER_KIND + extra + 2, bad_boxes=PROBLEMS_SHOWN_PER_KIND + extra)
    code, out, _ = _run(capsys, "data", "validate", path, "--no-image-check")
    assert code == 1
    assert sum(": bbox: " in line for line in out.splitlines()) == PROBLEMS_SHOWN_PER_KIND
    assert f"... and {extra} more bbox problem(s) not shown" in out
    assert out.splitlines()[-1].startswith(f"FAILED: {PROBLEMS_SHOWN_PER_KIND + extra} problem(s)")


def test_synth_says_what_it_wrote(tmp_path, capsys):
    out_dir = tmp_path / "synth"
    code, out, err = _run(capsys, "data", "synth", "--out", out_dir, "--num-images", 4, "--image-size", 32)
    assert code == 0, err
    assert (f"wrote 4 images (32x32 PNG) to {out_dir / 'images'} and their 4 semantic masks "
            f"(PNG, pixel = category id) to {out_dir / 'masks'}") in out
    counted = {}
    for split in ("train", "val", "test"):
        payload = json.loads((out_dir / "annotations" / f"instances_{split}.json").read_text())
        counted[split] = len(payload["images"])
        assert (f"{split}: {out_dir / 'annotations' / f'instances_{split}.json'} ({len(payload['images'])} "
                f"image(s), {len(payload['annotations'])} object(s))") in out
    assert sum(counted.values()) == 4


@pytest.mark.parametrize("argv, words", [
    (["--out", "{tmp}/afile/sub"], "afile is a file, not a folder"),       # was [Errno 17] File exists
    (["--out", "{tmp}/taken"], "pass --overwrite to replace it"),        # was "pass overwrite=True"
    (["--out", "{tmp}/x", "--num-images", "0"], "--num-images must be >= 1, got 0"),
    (["--out", "{tmp}/x", "--image-size", "8"], "--image-size must be >= 32 px, got 8"),
])
def test_synth_errors_name_flags(tmp_path, capsys, argv, words):
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "data", "synth", *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == EXIT_ERROR
    line = _one_error_line(err)
    assert words in line and "Errno" not in line and "num_images" not in line and "=True" not in line
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "taken"]  # nothing else written


def test_split_refuses_a_file_as_folder_and_existing_splits_without_overwrite(tmp_path, capsys):
    path = _dataset(tmp_path / "d", 4)
    (tmp_path / "afile").write_text("")
    code, _, err = _run(capsys, "data", "split", path, "--out", tmp_path / "afile")
    assert code == EXIT_ERROR and "afile is a file, not a folder" in _one_error_line(err)
    assert _run(capsys, "data", "split", path, "--out", tmp_path / "s")[0] == 0
    before = (tmp_path / "s" / "instances_train.json").read_text()
    code, _, err = _run(capsys, "data", "split", path, "--out", tmp_path / "s", "--seed", "5")
    assert code == EXIT_ERROR and "--overwrite" in _one_error_line(err)
    assert (tmp_path / "s" / "instances_train.json").read_text() == before
    assert _run(capsys, "data", "split", path, "--out", tmp_path / "s", "--seed", "5", "--overwrite")[0] == 0


def test_every_data_option_has_help_text():
    from detseg.cli import build_parser

    parser = build_parser()
    data = next(a for a in parser._subparsers._group_actions[0].choices["data"]._actions
                if hasattr(a, "choices") and a.choices)
    for name, command in data.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"detseg data {name} {action.option_strings or action.dest} has no help"
