"""Loaded models and their versions: poll base paths, load new versions, retire old ones.

Like TF Serving's file-system source with the default policy, each model serves the
newest `num_versions` (default 1) numeric version folders under its base path, or the
`specific_versions` its config lists. Non-numeric folders (`.tmp-*` exports in progress)
are ignored. A new version is loaded in the polling thread while the old one keeps
serving; it becomes AVAILABLE, then older versions go UNLOADING -> END. A request holds a
reference to the `Servable` it got, so a version retired mid-request finishes that
request: swaps never drop in-flight work. A version that fails to load is END with its
error, and the versions already serving stay.

Version states and their names are TF Serving's (`ModelVersionStatus.State`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from detseg.serving.errors import ServingError, from_exception, invalid_argument, not_found
from detseg.serving.export import load_saved_model, numeric_versions
from detseg.serving.model_config import ModelEntry

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass
class Servable:
    """One loaded version: its callable signatures and their SignatureDefs (as TF Serving reports them)."""

    name: str
    version: int
    path: Path
    loaded: Any
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]

    def function(self, signature_name: str) -> Any:
        try:
            return self.loaded.signatures[signature_name]
        except KeyError:
            raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def') from None

    def signature_def(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        signature = self.signature_defs.get(signature_name)
        if signature is None or signature_name not in self.loaded.signatures:
            raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def')
        return signature


def read_signature_defs(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDef map of the "serve" MetaGraph in `version_dir/saved_model.pb`."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError("NOT_FOUND", f"{version_dir}: no MetaGraph tagged {SERVE_TAG!r}")


def load_servable(name: str, version: int, version_dir: Path) -> Servable:
    """Load one SavedModel version (raises on a broken or missing model)."""
    signature_defs = read_signature_defs(version_dir)
    loaded = load_saved_model(version_dir, tags=[SERVE_TAG])
    return Servable(name, version, version_dir, loaded, signature_defs)


@dataclass
class VersionStatus:
    """TF Serving's ModelVersionStatus: state name and the load's status code/message."""

    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class _ModelState:
    entry: ModelEntry
    servables: dict[int, Servable] = field(default_factory=dict)
    statuses: dict[int, VersionStatus] = field(default_factory=dict)
    failed_mtimes: dict[int, float] = field(default_factory=dict)


class ModelRegistry:
    """The models a server serves, kept in step with their base paths by a polling thread."""

    def __init__(self, entries: list[ModelEntry], poll_interval_s: float = 1.0,
                 loader: Callable[[str, int, Path], Servable] = load_servable):
        if not entries:
            raise ValueError("a model server needs at least one model (name and base path)")
        self._models = {e.name: _ModelState(e) for e in entries}
        self._poll_interval_s = float(poll_interval_s)
        self._loader = loader
        self._lock = threading.RLock()
        self._status_changed = threading.Condition(self._lock)  # notified on every version state change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def model_names(self) -> list[str]:
        return sorted(self._models)

    def start(self) -> None:
        """Load what is on disk now (blocking), then keep polling in a daemon thread."""
        self.poll_once()
        if self._poll_interval_s > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-registry-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # a bad poll must not kill the poller; the next one retries
                log.exception("polling model base paths failed")

    def poll_once(self) -> None:
        for state in list(self._models.values()):
            self._sync_model(state)

    def _aspired_versions(self, entry: ModelEntry) -> list[int]:
        on_disk = numeric_versions(entry.base_path)
        if entry.specific_versions:
            return [v for v in on_disk if v in set(entry.specific_versions)]
        return on_disk[-entry.num_versions:]

    def _sync_model(self, state: _ModelState) -> None:
        aspired = self._aspired_versions(state.entry)
        for version in aspired:
            if version not in state.servables:
                self._load_version(state, version)
        with self._lock:
            serving_aspired = any(v in state.servables for v in aspired)
            retire = [v for v in state.servables if v not in aspired and (serving_aspired or not aspired)]
            for version in retire:
                state.statuses[version] = VersionStatus("UNLOADING")
                # Dropping the reference is the unload: requests holding it finish first.
                del state.servables[version]
                state.statuses[version] = VersionStatus("END")
                log.info("model %s: version %d unloaded", state.entry.name, version)
            self._status_changed.notify_all()

    def _load_version(self, state: _ModelState, version: int) -> None:
        version_dir = state.entry.base_path / str(version)
        try:
            mtime = version_dir.stat().st_mtime
        except OSError:
            return
        if state.failed_mtimes.get(version) == mtime:
            return  # failed before and unchanged since: do not retry every poll
        with self._lock:
            state.statuses[version] = VersionStatus("LOADING")
            self._status_changed.notify_all()
        try:
            servable = self._loader(state.entry.name, version, version_dir)
        except Exception as error:  # any load failure is reported in the version's status
            failure = from_exception(error)
            log.error("model %s: version %d failed to load: %s", state.entry.name, version, failure)
            with self._lock:
                state.failed_mtimes[version] = mtime
                code = failure.code if failure.code != "INVALID_ARGUMENT" else "UNKNOWN"
                state.statuses[version] = VersionStatus("END", code, failure.message)
                self._status_changed.notify_all()
            return
        with self._lock:
            state.servables[version] = servable
            state.failed_mtimes.pop(version, None)
            state.statuses[version] = VersionStatus("AVAILABLE")
            self._status_changed.notify_all()
        log.info("model %s: version %d available", state.entry.name, version)

    def _model(self, name: str, request: str) -> _ModelState:
        state = self._models.get(name)
        if state is None:
            raise not_found(f"Servable not found for request: {request}")
        return state

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request: latest available, a specific version, or a labelled one."""
        if label is not None:
            if version is not None:
                raise invalid_argument(f"Both model version ({version}) and model version label ({label}) "
                                       f"cannot be supplied.")
            labels = self._model(name, f"Latest({name})").entry.version_labels
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        state = self._model(name, request)
        with self._lock:
            if version is None and state.servables:
                return state.servables[max(state.servables)]
            if version is not None and version in state.servables:
                return state.servables[version]
        raise not_found(f"Servable not found for request: {request}")

    def wait_for_version(self, name: str, version: int, state: str = "AVAILABLE",
                         timeout: float | None = None) -> bool:
        """Block until `version` of model `name` is in `state` (True), or `timeout` s pass (False).

        `state` is a TF Serving state name: LOADING, AVAILABLE, or END (retired, or failed
        to load; UNLOADING passes inside one locked step and is never seen). Whoever drops a
        new version into a polled base path waits here for the poller to load it (or to
        retire the old one) instead of sleeping through poll intervals.
        """
        self._model(name, f"Latest({name})")

        def reached() -> bool:
            status = self._models[name].statuses.get(version)
            return status is not None and status.state == state

        with self._status_changed:
            return self._status_changed.wait_for(reached, timeout)

    def version_statuses(self, name: str, version: int | None = None) -> dict[int, VersionStatus]:
        """Status of every version seen (or of one), as GetModelStatus reports it."""
        state = self._models.get(name)
        with self._lock:
            statuses = dict(state.statuses) if state else {}
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return {version: statuses[version]}
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return statuses
