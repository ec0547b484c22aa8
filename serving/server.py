"""The embedded model server: registry + (optional) batching + REST and gRPC front ends.

    with ModelServer([ModelEntry("shapes", Path("exports/shapes"))],
                     ServerOptions(port=0, rest_api_port=0)) as server:
        print(server.rest_url, server.grpc_target)

Ports follow TF Serving: gRPC on `port` (8500), REST on `rest_api_port` (8501); 0 picks
a free port, None turns that front end off. The server binds 127.0.0.1 unless `host`
says otherwise. `max_lifetime_s` stops it by itself (tests and demos never leak one).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from detseg.serving.batching import BatchingOptions
from detseg.serving.grpc_api import build_grpc_server
from detseg.serving.model_config import ModelEntry
from detseg.serving.prediction import PredictionCore
from detseg.serving.registry import ModelRegistry
from detseg.serving.rest_api import DEFAULT_MAX_BODY_BYTES, RestApi, RestServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """Where to listen and how to serve (names follow tensorflow_model_server's flags)."""

    host: str = "127.0.0.1"
    port: int | None = 8500
    rest_api_port: int | None = 8501
    poll_interval_s: float = 1.0
    batching: BatchingOptions | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_lifetime_s: float | None = None

    def __post_init__(self) -> None:
        if self.port is None and self.rest_api_port is None:
            raise ValueError("the server needs a gRPC port or a REST port (or both)")
        if self.port and self.rest_api_port and self.port == self.rest_api_port:
            raise ValueError(f"gRPC and REST cannot share port {self.port}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")


class ModelServer:
    """Serves `models` over REST and gRPC until `stop()` (or its max lifetime)."""

    def __init__(self, models: list[ModelEntry], options: ServerOptions = ServerOptions()):
        self.options = options
        self.registry = ModelRegistry(models, options.poll_interval_s)
        self.core: PredictionCore | None = None
        self._rest: RestServer | None = None
        self._grpc = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._lifetime_timer: threading.Timer | None = None

    @property
    def rest_url(self) -> str | None:
        return None if self.rest_port is None else f"http://{self._connect_host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str | None:
        return None if self.grpc_port is None else f"{self._connect_host}:{self.grpc_port}"

    @property
    def _connect_host(self) -> str:
        host = self.options.host
        return "127.0.0.1" if host in ("", "0.0.0.0") else (f"[{host}]" if ":" in host else host)

    def start(self) -> "ModelServer":
        """Load the models (blocking), then open the ports. Returns self."""
        self.registry.start()
        self.core = PredictionCore(self.registry, self.options.batching)
        try:
            self._open_ports()
        except BaseException:
            self.stop()
            raise
        if self.options.max_lifetime_s:
            self._lifetime_timer = threading.Timer(self.options.max_lifetime_s, self._expire)
            self._lifetime_timer.daemon = True
            self._lifetime_timer.start()
        log.info("serving %s: REST %s, gRPC %s", ", ".join(self.registry.model_names),
                 self.rest_url or "off", self.grpc_target or "off")
        return self

    def _open_ports(self) -> None:
        options = self.options
        if options.port is not None:
            self._grpc, self.grpc_port = build_grpc_server(self.core, options.host, options.port,
                                                           options.max_body_bytes)
            self._grpc.start()
        if options.rest_api_port is not None:
            self._rest = RestServer((options.host, options.rest_api_port), RestApi(self.core),
                                    options.max_body_bytes)
            self.rest_port = self._rest.server_address[1]
            threading.Thread(target=self._rest.serve_forever, kwargs={"poll_interval": 0.2},
                             name="rest-server", daemon=True).start()

    def _expire(self) -> None:
        log.warning("server reached its max lifetime of %s s: stopping", self.options.max_lifetime_s)
        self.stop()

    def stop(self) -> None:
        """Close the ports, finish queued batches, stop polling. Safe to call twice."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._lifetime_timer is not None:
                self._lifetime_timer.cancel()
            if self._rest is not None:
                self._rest.shutdown()
                self._rest.server_close()
            if self._grpc is not None:
                self._grpc.stop(grace=1.0).wait(5)
            self.registry.stop()
            if self.core is not None:
                self.core.close()
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or `timeout` passes (False)."""
        return self._stopped.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
