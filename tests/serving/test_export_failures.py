"""Exports are atomic under injected failure, also into a base path a running server serves.

The fault is injected by hand: the SavedModel save, or the rename that publishes a
finished version, raises midway (monkeypatched to fail after the real save wrote its
files). Everything else is real: TensorFlow writes a real SavedModel, and a real
`ModelServer` serves the base path over REST on 127.0.0.1. The server polls only when
the test says so (`registry.poll_once()`, called while the failing export is half done
and again after it), so what it could have seen is certain, not a matter of timing.
After each failure: version 1 is intact and still served, no version 2 is visible or
loaded, and no temporary folder is left.
"""

from __future__ import annotations

import filecmp

import pytest
import tensorflow as tf
from serving_test_models import MODEL_NAME, copy_base_path, start_server

import detseg.serving.export as export_module
from detseg.serving.client import ServingClient
from detseg.serving.export import export_saved_model, numeric_versions


class DiskFull(OSError):
    """The injected fault."""


def tree_listing(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def served_versions(server) -> dict[str, str]:
    with ServingClient(server.rest_url, MODEL_NAME) as client:
        return {entry["version"]: entry["state"] for entry in client.status()["model_version_status"]}


@pytest.fixture
def served_base(tmp_path, exported_detection):
    """A private copy of the exported base path (version 1), served with polling by hand."""
    base = copy_base_path(exported_detection, tmp_path / "models" / MODEL_NAME)
    server = start_server(base, poll_interval_s=0, port=None)
    yield base, server
    server.stop()


def assert_version_1_alone_and_served(base, exported_detection, server, sample_images):
    assert numeric_versions(base) == [1]
    assert [p.name for p in base.iterdir()] == ["1"], "a temporary or half version was left behind"
    # Version 1 is byte for byte the export it was.
    assert tree_listing(base / "1") == tree_listing(exported_detection / "1")
    files = [name for name in tree_listing(base / "1") if (base / "1" / name).is_file()]
    _, mismatch, errors = filecmp.cmpfiles(base / "1", exported_detection / "1", files, shallow=False)
    assert not mismatch and not errors
    server.registry.poll_once()
    assert served_versions(server) == {"1": "AVAILABLE"}
    with ServingClient(server.rest_url, MODEL_NAME) as client:
        outputs = client.predict(sample_images[:1])
    assert outputs["boxes"].shape[0] == 1


@pytest.mark.parametrize("failing", ["save", "rename"])
def test_a_failing_export_leaves_the_served_version_and_no_half_version(
        failing, served_base, exported_detection, detection_module, sample_images, monkeypatch):
    base, server = served_base
    real_save, seen_midway = tf.saved_model.save, []

    def save_then_poll(module, path, signatures=None, options=None):
        real_save(module, path, signatures=signatures, options=options)
        # Midway: the new version's files exist (under their temporary name) and the
        # server polls now. It must neither see nor load them.
        seen_midway.append(sorted(p.name for p in base.iterdir()))
        server.registry.poll_once()
        assert served_versions(server) == {"1": "AVAILABLE"}
        if failing == "save":
            raise DiskFull("disk full while writing variables")

    def rename_fails(source, target):
        raise DiskFull(f"cannot rename {source} to {target}")

    monkeypatch.setattr(export_module.tf.saved_model, "save", save_then_poll)
    if failing == "rename":
        monkeypatch.setattr(export_module.os, "rename", rename_fails)
    with pytest.raises(DiskFull):
        export_saved_model(detection_module, base, write_config=False)
    assert len(seen_midway) == 1 and seen_midway[0][1] == "1" and seen_midway[0][0].startswith(".tmp-2-")
    assert_version_1_alone_and_served(base, exported_detection, server, sample_images)

    # The fault gone, the same export succeeds and the server then serves version 2.
    monkeypatch.undo()
    assert export_saved_model(detection_module, base, write_config=False) == base / "2"
    server.registry.poll_once()
    assert served_versions(server) == {"1": "END", "2": "AVAILABLE"}
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def test_a_failing_rename_of_an_atomic_file_keeps_the_old_file(tmp_path, monkeypatch):
    import detseg.core.atomic_files as atomic_files

    target = tmp_path / "evaluation.json"
    atomic_files.write_json_atomic({"version": 1}, target)

    def rename_fails(source, destination):
        assert (tmp_path / "evaluation.json").read_text() == '{"version": 1}'
        assert open(source).read() == '{"version": 2}'  # the new content is complete, beside it
        raise DiskFull("rename failed")

    monkeypatch.setattr(atomic_files.os, "replace", rename_fails)
    with pytest.raises(DiskFull):
        atomic_files.write_json_atomic({"version": 2}, target)
    assert target.read_text() == '{"version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]
