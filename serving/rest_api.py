"""TF Serving's REST API on the standard library's threading HTTP server.

Routes, as TF Serving matches them (case-insensitive; `http_rest_api_util.cc`):

    GET  /v1/models/NAME[/versions/V | /labels/L]             GetModelStatus as JSON
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata    GetModelMetadata as JSON
    POST /v1/models/NAME[/versions/V | /labels/L]:predict     predict (see serving.json_tensors)

Every answer is JSON; failures are `{"error": "<message>"}` with the HTTP status of the
status code (400 bad request, 404 unknown model/version, ...). Bodies over the size cap
get 413 before they are read. A request that breaks anything gets its 4xx/5xx and the
server keeps serving.
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from detseg.serving import json_tensors
from detseg.serving.errors import from_exception, invalid_argument, not_found
from detseg.serving.model_service import metadata_json, model_metadata, model_spec, model_status, status_json
from detseg.serving.prediction import PredictionCore

log = logging.getLogger(__name__)

_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?", re.IGNORECASE)
API_PREFIX = re.compile(r"/v1/.*", re.IGNORECASE)
INT64_MAX = 2**63 - 1
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
SOCKET_TIMEOUT_S = 60


def _parse_route(match: re.Match) -> tuple[str, int | None, str | None]:
    name, version, label = match.group(1), match.group(2), match.group(3)
    name = unquote(name) if name else ""
    if version is not None and int(version) > INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return name, int(version) if version is not None else None, unquote(label) if label else None


class RestApi:
    """The REST API's logic: (method, path, body) -> (HTTP status, JSON body). No sockets here."""

    def __init__(self, core: PredictionCore):
        self.core = core

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            return 200, self._dispatch(method, urlsplit(path).path, body)
        except Exception as error:  # every failure is answered as TF Serving's {"error": ...}
            failure = from_exception(error)
            if failure.code == "INTERNAL":
                log.exception("REST %s %s failed", method, path)
            return failure.http_status, json.dumps({"error": failure.message}).encode("utf-8")

    def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        if not API_PREFIX.fullmatch(path):
            raise not_found(f"Not found: {path} (the API is under /v1/models)")
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, label = _parse_route(match)
            verb = match.group(4).lower()
            if verb != "predict":
                raise invalid_argument(f"Expected {verb} signature method_name to be "
                                       f"tensorflow/serving/{verb}: detseg models have predict signatures only")
            return self._predict(name, version, label, body)
        if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label = _parse_route(match)
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = model_spec(name, version, label)
            if match.group(4):
                return _dump(metadata_json(model_metadata(self.core.registry, spec)))
            return _dump(status_json(model_status(self.core.registry, spec)))
        raise invalid_argument(f"Malformed request: {method} {path}")

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> bytes:
        document = json_tensors.parse_json_object(body)
        signature_name = json_tensors.signature_name_of(document)
        servable = self.core.registry.servable(name, version, label)
        dtypes = self.core.input_dtypes(servable, signature_name)
        inputs, request_format = json_tensors.request_arrays(document, dtypes)
        outputs = self.core.predict(servable, signature_name, inputs)
        return json_tensors.response_json(outputs, request_format)


def _dump(payload: dict) -> bytes:
    return json.dumps(payload, indent=1).encode("utf-8")


class RestRequestHandler(BaseHTTPRequestHandler):
    """Reads one request (with the size cap), hands it to `server.api`, writes the JSON answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line, not HTTP/0.9
    timeout = SOCKET_TIMEOUT_S     # a stalled client cannot hold a thread forever
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK of the headers on every kept-alive request.
    disable_nagle_algorithm = True
    server: "RestServer"

    def do_GET(self) -> None:
        self._respond(*self.server.api.handle("GET", self.path, b""))

    def do_POST(self) -> None:
        body = self._read_body()
        if body is not None:
            self._respond(*self.server.api.handle("POST", self.path, body))

    def do_PUT(self) -> None:
        self._reject_method()

    do_DELETE = do_PATCH = do_PUT

    def _reject_method(self) -> None:
        self._read_body()
        self._respond(*self.server.api.handle(self.command, self.path, b""))

    def _read_body(self) -> bytes | None:
        """The body, or None after answering 411/413/400 for a missing, oversized or bad length."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._refuse(411, "chunked request bodies are not supported: send Content-Length")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b"" if self.command != "POST" else self._refuse(411, "Content-Length required")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            return self._refuse(400, f"invalid Content-Length: {length_header!r}")
        if length > self.server.max_body_bytes:
            return self._refuse(413, f"request body of {length} bytes exceeds the limit of "
                                     f"{self.server.max_body_bytes} bytes")
        return self.rfile.read(length)

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True  # the unread body must not be parsed as the next request
        self._respond(status, json.dumps({"error": message}).encode("utf-8"))
        return None

    def _respond(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the stdlib raises itself (bad request line, bad headers) as JSON too."""
        self.close_connection = True
        self._respond(code, json.dumps({"error": message or explain or "bad request"}).encode("utf-8"))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s - %s", self.address_string(), format % args)


class RestServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the API and the body size cap."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: RestApi, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.api = api
        self.max_body_bytes = int(max_body_bytes)
        super().__init__(address, RestRequestHandler)

