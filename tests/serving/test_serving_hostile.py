"""Reliability: 1,000 malformed or hostile requests get 4xx answers, never 5xx, and the server still serves."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from urllib.parse import urlsplit

import numpy as np
import pytest
from serving_test_models import MODEL_NAME, start_server

from detseg.serving.batching import BatchingOptions
from detseg.serving.client import ServingClient

BODY_LIMIT = 200_000
PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def hostile_requests(image: bytes) -> list[tuple[str, str, bytes]]:
    """(method, path, body) of requests a server must refuse with a 4xx."""
    def body(payload) -> bytes:
        return json.dumps(payload).encode()

    pixels = "serving_pixels"
    return [
        ("POST", PREDICT, b"{"), ("POST", PREDICT, b""), ("POST", PREDICT, b"[]"), ("POST", PREDICT, b"\xff\xfe\x00"),
        ("POST", PREDICT, b"[" * 100_000), ("POST", PREDICT, b'{"instances": NaN}'),
        ("POST", PREDICT, body({"instances": "x"})), ("POST", PREDICT, body({"instances": []})),
        ("POST", PREDICT, body({"inputs": 5})), ("POST", PREDICT, body({"inputs": {"wrong": [b64(image)]}})),
        ("POST", PREDICT, body({"instances": [b64(image)], "inputs": [b64(image)]})),
        ("POST", PREDICT, body({"signature_name": 5, "instances": [b64(image)]})),
        ("POST", PREDICT, body({"signature_name": "nope", "instances": [b64(image)]})),
        ("POST", PREDICT, body({"instances": [{"b64": "!!! not base64 !!!"}]})),
        ("POST", PREDICT, body({"instances": [b64(b"hello, not an image")]})),
        ("POST", PREDICT, body({"instances": [b64(image[: len(image) // 2])]})),  # truncated PNG
        ("POST", PREDICT, body({"instances": [b64(b"")]})), ("POST", PREDICT, body({"inputs": []})),
        ("POST", PREDICT, body({"instances": [b64(image), b64(b"GIF89a broken")]})),
        ("POST", PREDICT, body({"instances": [{"images": b64(image), "extra": 1}]})),
        ("POST", PREDICT, body({"instances": [[b64(image)], [b64(image), b64(image)]]})),
        ("POST", PREDICT, body({"instances": [{"b64": 7}]})), ("POST", PREDICT, body({"instances": [None]})),
        ("POST", PREDICT, body({"signature_name": pixels, "instances": [[1, 2, 3]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "instances": [[[[300, 0, 0]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "instances": [[[[1.5, 0, 0]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "instances": [[[[0, 0, 0]], [[0, 0]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "instances": [[[[0, 0, 0, 0]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "inputs": [[[["a", "b", "c"]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "inputs": [[[[True, False, True]]]]})),
        ("POST", PREDICT, body({"signature_name": pixels, "inputs": [[[[10**30, 0, 0]]]]})),
        ("POST", PREDICT, b'{"signature_name": "serving_pixels", "inputs": [[[[NaN, 0, 0]]]]}'),
        ("POST", PREDICT, body({"instances": [b64(bytes(BODY_LIMIT))]})),  # over the size cap: 413
        ("POST", "/v1/models/nope:predict", body({"instances": [b64(image)]})),
        ("POST", f"/v1/models/{MODEL_NAME}/versions/77:predict", body({"instances": [b64(image)]})),
        ("POST", f"/v1/models/{MODEL_NAME}/versions/999999999999999999999:predict", body({"instances": []})),
        ("POST", f"/v1/models/{MODEL_NAME}/labels/stable:predict", body({"instances": [b64(image)]})),
        ("POST", f"/v1/models/{MODEL_NAME}:classify", body({"examples": []})),
        ("POST", f"/v1/models/{MODEL_NAME}:explode", body({})), ("POST", f"/v1/models/{MODEL_NAME}", b"{}"),
        ("GET", PREDICT, b""), ("GET", "/v1/models", b""), ("GET", "/v1/models/nope/metadata", b""),
        ("GET", f"/v1/models/{MODEL_NAME}/versions/12/metadata", b""), ("GET", "/", b""),
        ("GET", "/v2/models/x", b""), ("PUT", PREDICT, b"{}"), ("DELETE", f"/v1/models/{MODEL_NAME}", b""),
    ]


@pytest.fixture(scope="module")
def guarded_server(exported_detection):
    running = start_server(exported_detection, port=None, max_body_bytes=BODY_LIMIT,
                           batching=BatchingOptions(max_batch_size=4, batch_timeout_micros=1000))
    yield running
    running.stop()


def _send(connection_holder: list, netloc: str, method: str, path: str, body: bytes) -> int:
    """Send on a kept-alive connection; reopen it when the server closed it (413 does)."""
    for attempt in (1, 2):
        if connection_holder[0] is None:
            connection_holder[0] = http.client.HTTPConnection(netloc, timeout=60)
        connection = connection_holder[0]
        try:
            connection.request(method, path, body=body if method in ("POST", "PUT") else None,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert isinstance(payload.get("error"), str) and payload["error"], (method, path, payload)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection_holder[0] = None
            return response.status
        except (ConnectionError, http.client.HTTPException):
            connection.close()
            connection_holder[0] = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def test_thousand_hostile_requests_get_4xx_and_the_server_still_answers(guarded_server, sample_images):
    image = sample_images[0]
    requests = hostile_requests(image)
    netloc = urlsplit(guarded_server.rest_url).netloc
    holder: list = [None]
    statuses = {}
    for index in range(1000):
        method, path, body = requests[index % len(requests)]
        status = _send(holder, netloc, method, path, body)
        assert 400 <= status < 500, (index % len(requests), method, path, body[:120], status)
        statuses.setdefault(status, 0)
        statuses[status] += 1
    assert {400, 404, 413} <= set(statuses)
    client = ServingClient(guarded_server.rest_url, MODEL_NAME)
    answer = client.predict(sample_images)
    np.testing.assert_array_equal(answer["num_detections"], [3, 3, 3, 3])


def test_broken_http_gets_4xx_without_killing_the_server(guarded_server, sample_images):
    host, port = urlsplit(guarded_server.rest_url).netloc.split(":")
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/models/tiny:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /v1/models/tiny:predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                b"POST /v1/models/tiny:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(raw)
            reply = sock.recv(4096)
        assert reply.split(b" ")[1][:1] == b"4", (raw, reply[:200])
    assert ServingClient(guarded_server.rest_url, MODEL_NAME).predict(sample_images[:1])["boxes"].shape == (1, 4, 4)
