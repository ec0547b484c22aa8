"""The atomic writers: the whole new file or the old one, and no temporary left behind."""

import json

import pytest

from detseg.core.atomic_files import write_file_atomic, write_json_atomic, write_text_atomic


def test_text_and_json_replace_the_file_whole(tmp_path):
    target = tmp_path / "nested" / "out.json"
    write_text_atomic("old", target)
    write_json_atomic({"a": [1, 2]}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_unserializable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic({"kept": True}, target)
    with pytest.raises(TypeError):
        write_json_atomic({"bad": object()}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_the_writer_sees_the_target_name_and_its_file_is_renamed_into_place(tmp_path):
    target = tmp_path / "stage1_best.weights.h5"
    seen = []

    def write(temporary):
        seen.append(temporary)
        temporary.write_bytes(b"weights")

    assert write_file_atomic(target, write) == target
    assert seen[0].name == target.name and seen[0].parent != tmp_path  # suffix kept, not the target itself
    assert target.read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")

    def half_write(temporary):
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file_atomic(target, half_write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
