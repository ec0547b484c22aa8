"""The version registry and models.config: policies, labels, broken versions, config errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serving_test_models import MODEL_NAME, copy_base_path

from detseg.serving.errors import ServingError
from detseg.serving.model_config import ModelConfigError, ModelEntry, read_model_config
from detseg.serving.registry import ModelRegistry


def _registry(base: Path, **entry_options) -> ModelRegistry:
    registry = ModelRegistry([ModelEntry(MODEL_NAME, base, **entry_options)], poll_interval_s=0)
    registry.start()
    return registry


def _states(registry: ModelRegistry) -> dict[int, tuple[str, str]]:
    return {v: (s.state, s.error_code) for v, s in registry.version_statuses(MODEL_NAME).items()}


def test_a_broken_new_version_is_reported_and_the_old_one_keeps_serving(tmp_path, exported_detection):
    base = copy_base_path(exported_detection, tmp_path / MODEL_NAME)
    registry = _registry(base)
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"definitely not a SavedModel")
    (base / ".tmp-3-1-abc").mkdir()  # an export in progress: never looked at
    registry.poll_once()
    states = _states(registry)
    assert states[1] == ("AVAILABLE", "OK") and states[2][0] == "END" and states[2][1] != "OK"
    assert registry.servable(MODEL_NAME).version == 1
    assert registry.version_statuses(MODEL_NAME)[2].error_message


def test_latest_policy_retires_old_versions_and_specific_versions_stay(tmp_path, exported_detection):
    base = copy_base_path(exported_detection, tmp_path / MODEL_NAME)
    shutil.copytree(base / "1", base / "2")
    registry = _registry(base)
    assert _states(registry) == {2: ("AVAILABLE", "OK")}  # TF Serving's default: the latest only
    shutil.rmtree(base / "2")
    registry.poll_once()
    assert _states(registry) == {1: ("AVAILABLE", "OK"), 2: ("END", "OK")}
    pinned = _registry(base, specific_versions=(1,), version_labels={"stable": 1})
    assert pinned.servable(MODEL_NAME, label="stable").version == 1
    with pytest.raises(ServingError, match="Unrecognized servable version label: canary"):
        pinned.servable(MODEL_NAME, label="canary")
    with pytest.raises(ServingError, match=r"Specific\(tiny, 2\)"):
        pinned.servable(MODEL_NAME, version=2)


def test_model_config_is_read_with_policies_labels_and_relative_paths(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("""
model_config_list {
  config { name: "a" base_path: "exports/a" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } } }
  config { name: "b" base_path: "/srv/b"
           model_version_policy { specific { versions: 3 versions: 5 } }
           version_labels { key: "stable" value: 3 } }
}
""")
    a, b = read_model_config(config)
    assert (a.name, a.base_path, a.num_versions) == ("a", (tmp_path / "exports" / "a").resolve(), 2)
    assert (b.base_path, b.specific_versions, b.version_labels) == (Path("/srv/b"), (3, 5), {"stable": 3})


@pytest.mark.parametrize("text,message", [
    ("model_config_list { config { name: 'a' } }", "name and a base_path"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }", "platform"),
    ("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }", "twice"),
    ("this is not a config", "not a text-format ModelServerConfig"),
    ("", "no model_config_list"),
])
def test_bad_model_config_names_the_file(tmp_path, text, message):
    config = tmp_path / "bad.config"
    config.write_text(text)
    with pytest.raises(ModelConfigError, match=message) as raised:
        read_model_config(config)
    assert str(config) in str(raised.value)
    with pytest.raises(ModelConfigError, match="cannot read"):
        read_model_config(tmp_path / "missing.config")
