"""TF Serving's `models.config` (a text-format `ModelServerConfig`), read and written.

The file lists models by name and base path, for example:

    model_config_list {
      config {
        name: "shapes"
        base_path: "/models/shapes"
        model_platform: "tensorflow"
      }
    }

Real TensorFlow Serving reads it with `--model_config_file`; so does `detseg serve`.
Relative base paths are resolved against the config file's folder by detseg (real TF
Serving resolves them against its working directory: write absolute paths for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from detseg.core.atomic_files import write_text_atomic

MODEL_PLATFORM = "tensorflow"
CONFIG_FILENAME = "models.config"


class ModelConfigError(ValueError):
    """A models.config file is unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class ModelEntry:
    """One served model: its name, its base path (holding numbered versions) and its policy.

    `num_versions` is TF Serving's `latest { num_versions }` policy (serve the newest N);
    `specific_versions`, when set, serves exactly those. `version_labels` maps label -> version.
    """

    name: str
    base_path: Path
    num_versions: int = 1
    specific_versions: tuple[int, ...] = ()
    version_labels: dict[str, int] = field(default_factory=dict)


def read_model_config(path: str | os.PathLike) -> list[ModelEntry]:
    """Parse a text-format ModelServerConfig into entries (base paths made absolute)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ModelConfigError(f"{path}: cannot read model config ({e.strerror or e})") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ModelConfigError(f"{path}: not a text-format ModelServerConfig: {e}") from None
    if not config.HasField("model_config_list"):
        raise ModelConfigError(f"{path}: has no model_config_list")
    entries = []
    for item in config.model_config_list.config:
        if not item.name or not item.base_path:
            raise ModelConfigError(f"{path}: every config needs a name and a base_path")
        if item.model_platform and item.model_platform != MODEL_PLATFORM:
            raise ModelConfigError(f"{path}: model {item.name!r}: platform {item.model_platform!r} "
                                   f"is not supported (only {MODEL_PLATFORM!r})")
        base = Path(item.base_path)
        policy = item.model_version_policy
        entries.append(ModelEntry(
            name=item.name,
            base_path=base if base.is_absolute() else (path.parent / base).resolve(),
            num_versions=max(1, policy.latest.num_versions) if policy.HasField("latest") else 1,
            specific_versions=tuple(policy.specific.versions) if policy.HasField("specific") else (),
            version_labels=dict(item.version_labels)))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelConfigError(f"{path}: model name(s) listed twice: {duplicates}")
    return entries


def update_model_config(path: str | os.PathLike, name: str, base_path: str) -> Path:
    """Add or replace model `name` with `base_path` in the config at `path`, atomically.

    Other models in an existing file are kept as they are.
    """
    path = Path(path)
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(encoding="utf-8"), config)
        except (OSError, text_format.ParseError) as e:
            raise ModelConfigError(f"{path}: cannot update an unreadable model config: {e}") from None
    configs = config.model_config_list.config
    item = next((c for c in configs if c.name == name), None)
    if item is None:
        item = configs.add()
        item.name = name
    item.base_path = str(base_path)
    item.model_platform = MODEL_PLATFORM
    return write_text_atomic(text_format.MessageToString(config), path)
