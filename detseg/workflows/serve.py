"""Serve workflow: start the embedded TF-Serving-compatible server; returns the running server.

    server = start_server("exports/shapes", "shapes", rest_api_port=0, grpc_port=None)
    ...  # server.rest_url, server.grpc_target
    server.stop()

`detseg serve` parses `tensorflow_model_server`-style flags, calls `start_server`, and
waits; a Python script (or a test) gets the `ModelServer` and stops it when done (it is
also a context manager).

Importing this module loads no TensorFlow (`model_entries` checks a base path or reads a
models.config without it); `start_server` loads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from detseg.serving.batching import BatchingOptions
from detseg.serving.model_config import ModelEntry, read_model_config

if TYPE_CHECKING:
    from detseg.serving.server import ModelServer

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501


def model_entries(model_base_path: str | os.PathLike | None = None, model_name: str | None = None,
                  model_config_file: str | os.PathLike | None = None) -> list[ModelEntry]:
    """The served models: one base path (named `model_name`, default its folder's name), or
    the models a TF Serving `models.config` lists."""
    if (model_base_path is None) == (model_config_file is None):
        raise ValueError("give a model base path or a models.config file (one of them)")
    if model_config_file is not None:
        if model_name:
            raise ValueError("a model name goes with a model base path; models.config names its models")
        return read_model_config(Path(model_config_file))
    base = Path(model_base_path).resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"model base path {model_base_path}: no such folder")
    return [ModelEntry(model_name or base.name, base)]


def start_server(model_base_path: str | os.PathLike | None = None, model_name: str | None = None, *,
                 model_config_file: str | os.PathLike | None = None,
                 models: Sequence[ModelEntry] | None = None, host: str = "127.0.0.1",
                 rest_api_port: int | None = DEFAULT_REST_PORT, grpc_port: int | None = DEFAULT_GRPC_PORT,
                 batching: BatchingOptions | None = None, poll_interval_s: float = 1.0,
                 max_request_bytes: int | None = None,
                 max_lifetime_s: float | None = None) -> ModelServer:
    """Load the models and open the ports; returns the started `ModelServer`.

    The models: `model_base_path` (named `model_name`), or `model_config_file`, or
    `models` (from `model_entries`), one of the three.

    Ports as in `serving.server.ServerOptions`: 0 picks a free port, None turns that API
    off. `poll_interval_s` 0 loads the versions once; otherwise new versions are picked up
    as they appear. `max_request_bytes`: the largest REST body (None: the server's
    default, `serving.rest_api.DEFAULT_MAX_BODY_BYTES`). Stop it with `server.stop()`.
    """
    from detseg.serving.rest_api import DEFAULT_MAX_BODY_BYTES  # these load TensorFlow
    from detseg.serving.server import ModelServer, ServerOptions

    for name, port in (("grpc_port", grpc_port), ("rest_api_port", rest_api_port)):
        if port is not None and port < 0:
            raise ValueError(f"{name} must be >= 0 (0 picks a free port, None turns that API off), got {port}")
    if models is not None:
        if model_base_path is not None or model_config_file is not None or model_name:
            raise ValueError("give models, or a model base path, or a models.config file (one of them)")
        entries = list(models)
    else:
        entries = model_entries(model_base_path, model_name, model_config_file)
    options = ServerOptions(host=host, port=grpc_port, rest_api_port=rest_api_port,
                            poll_interval_s=poll_interval_s, batching=batching,
                            max_body_bytes=DEFAULT_MAX_BODY_BYTES if max_request_bytes is None else max_request_bytes,
                            max_lifetime_s=max_lifetime_s)
    return ModelServer(entries, options).start()


def served_versions(server: ModelServer, name: str) -> list[int]:
    """The versions `server` has of model `name` (loaded or loading), oldest first."""
    try:
        return sorted(server.registry.version_statuses(name))
    except ValueError:  # no version of it yet
        return []
