"""The REST API over real HTTP on 127.0.0.1: status, metadata, predict, errors, size cap, new versions."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest
import tensorflow as tf
from serving_test_models import LABELS, MODEL_NAME, copy_base_path, random_pixels, start_server

from detseg.serving.client import ServingClient


def http_call(url: str, method: str, path: str, body: bytes | None = None,
              headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def post_json(url: str, path: str, payload) -> tuple[int, dict]:
    return http_call(url, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


@pytest.fixture(scope="module")
def reference(exported_detection, sample_images) -> dict[str, np.ndarray]:
    """The SavedModel called in-process on the sample images: what every transport must return."""
    signature = tf.saved_model.load(str(exported_detection / "1")).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(images=tf.constant(sample_images)).items()}


def test_model_status(server):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    assert http_call(server.rest_url, "GET", f"/v1/models/{MODEL_NAME}") == (200, expected)
    assert http_call(server.rest_url, "GET", f"/v1/models/{MODEL_NAME}/versions/1") == (200, expected)


def test_metadata_lists_signature_defs_as_tf_serving_prints_them(server):
    status, body = http_call(server.rest_url, "GET", f"/v1/models/{MODEL_NAME}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_STRING"
    assert images["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert signatures["serving_pixels"]["inputs"]["pixels"]["dtype"] == "DT_UINT8"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert set(signatures["serving_default"]["outputs"]) == {
        "boxes", "scores", "classes", "class_names", "num_detections", "masks", "image_height", "image_width"}


def test_predict_row_format_with_b64_equals_in_process_call(server, sample_images, reference):
    status, body = post_json(server.rest_url, f"/v1/models/{MODEL_NAME}:predict",
                             {"instances": [b64(image) for image in sample_images]})
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == len(sample_images)
    for row, prediction in enumerate(predictions):
        np.testing.assert_array_equal(np.array(prediction["boxes"], np.float32), reference["boxes"][row])
        np.testing.assert_array_equal(np.array(prediction["scores"], np.float32), reference["scores"][row])
        assert prediction["class_names"] == [n.decode() for n in reference["class_names"][row]]
        assert prediction["num_detections"] == int(reference["num_detections"][row])
        np.testing.assert_array_equal(prediction["masks"], reference["masks"][row])


def test_predict_columnar_format_and_named_instances(server, sample_images, reference):
    path = f"/v1/models/{MODEL_NAME}/versions/1:predict"
    status, body = post_json(server.rest_url, path, {"signature_name": "serving_default",
                                                     "inputs": {"images": [b64(i) for i in sample_images[:2]]}})
    assert status == 200, body
    # The reference ran as one batch of all sample images, this request as a batch of two:
    # oneDNN may sum in another order for another batch size (seen: 4e-6 px apart).
    np.testing.assert_allclose(np.array(body["outputs"]["boxes"], np.float32), reference["boxes"][:2],
                               rtol=0, atol=1e-4)
    assert body["outputs"]["classes"] == reference["classes"][:2].tolist()
    status, body = post_json(server.rest_url, path, {"instances": [{"images": b64(sample_images[0])}]})
    assert status == 200 and body["predictions"][0]["classes"] == reference["classes"][0].tolist()


def test_predict_pixels_signature_with_nested_lists(server):
    pixels = np.stack([random_pixels(20, 30, seed) for seed in range(2)])
    status, body = post_json(server.rest_url, f"/v1/models/{MODEL_NAME}:predict",
                             {"signature_name": "serving_pixels", "instances": pixels.tolist()})
    assert status == 200, body
    client = ServingClient(server.grpc_target, MODEL_NAME)
    expected = client.predict(pixels)
    np.testing.assert_array_equal(np.array([p["boxes"] for p in body["predictions"]], np.float32), expected["boxes"])
    assert [p["class_names"] for p in body["predictions"]] == expected["class_names"].astype(str).tolist()
    assert all(name in LABELS + [""] for p in body["predictions"] for name in p["class_names"])


@pytest.mark.parametrize("path,status,message", [
    ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
    (f"/v1/models/{MODEL_NAME}/versions/9:predict", 404, f"Servable not found for request: Specific({MODEL_NAME}, 9)"),
])
def test_unknown_model_or_version_is_404(server, sample_images, path, status, message):
    assert post_json(server.rest_url, path, {"instances": [b64(sample_images[0])]}) == (status, {"error": message})


def test_unknown_status_and_metadata_are_404(server):
    assert http_call(server.rest_url, "GET", "/v1/models/nope")[0] == 404
    assert http_call(server.rest_url, "GET", f"/v1/models/{MODEL_NAME}/versions/3") == (
        404, {"error": f"Could not find version 3 of model {MODEL_NAME}"})
    assert http_call(server.rest_url, "GET", f"/v1/models/{MODEL_NAME}/versions/3/metadata")[0] == 404


def test_malformed_requests_get_400_and_the_server_keeps_serving(server, sample_images, reference):
    path = f"/v1/models/{MODEL_NAME}:predict"
    status, body = http_call(server.rest_url, "POST", path, b'{"instances": [', {})
    assert status == 400 and body["error"].startswith("JSON Parse error")
    assert post_json(server.rest_url, path, {"signature_name": "nope", "instances": [b64(sample_images[0])]}) == (
        400, {"error": 'Serving signature name: "nope" not found in signature def'})
    status, body = post_json(server.rest_url, path, {"instances": [b64(b"not an image")]})
    assert status == 400 and body["error"].startswith("Unknown image file format")
    assert post_json(server.rest_url, path, {"inputs": []}) == (
        400, {"error": "input 'images' holds no images (batch size 0)"})
    status, body = post_json(server.rest_url, path, {"instances": [b64(image) for image in sample_images]})
    assert status == 200
    np.testing.assert_array_equal(np.array(body["predictions"][3]["boxes"], np.float32), reference["boxes"][3])


def test_oversized_request_is_refused_with_413(exported_detection, sample_images):
    small = start_server(exported_detection, port=None, max_body_bytes=4096)
    try:
        payload = json.dumps({"instances": [b64(bytes(8000))]}).encode()
        status, body = http_call(small.rest_url, "POST", f"/v1/models/{MODEL_NAME}:predict", payload)
        assert status == 413 and "exceeds the limit of 4096 bytes" in body["error"]
        status, _ = post_json(small.rest_url, f"/v1/models/{MODEL_NAME}:predict", {"instances": [b64(sample_images[0])]})
        assert status == 200
    finally:
        small.stop()


def test_new_version_is_picked_up_without_dropping_requests(tmp_path, exported_detection, exported_detection_v2,
                                                            sample_images):
    """A client asks without pause while the server's own poller loads version 2 and retires 1.

    Every step waits on an event, never on a clock: the drop follows the asker's first
    answer (version 1 has answered), the registry says when version 2 is AVAILABLE and
    version 1 END, and the check follows three answers given after that.
    """
    base = copy_base_path(exported_detection, tmp_path / MODEL_NAME)
    running = start_server(base, port=None)
    client = ServingClient(running.rest_url, MODEL_NAME)
    before = client.predict(sample_images[:1])
    failures, answers, stop = [], [], threading.Event()
    answered = threading.Condition()

    def keep_asking() -> None:
        asker = ServingClient(running.rest_url, MODEL_NAME)
        while not stop.is_set():
            try:
                boxes = asker.predict(sample_images[:1])["boxes"]
            except Exception as error:  # collected: the test asserts there were none
                failures.append(error)
                boxes = None
            with answered:
                answers.append(boxes)
                answered.notify_all()

    def wait_for_answers(count: int) -> None:
        with answered:
            assert answered.wait_for(lambda: len(answers) >= count, timeout=120), "the asker stopped answering"

    thread = threading.Thread(target=keep_asking)
    thread.start()
    try:
        wait_for_answers(1)
        # An atomic drop, as export_saved_model does: copy beside, then rename.
        shutil.copytree(exported_detection_v2, base / ".tmp-2")
        (base / ".tmp-2").rename(base / "2")
        assert running.registry.wait_for_version(MODEL_NAME, 2, "AVAILABLE", timeout=120), "version 2 never loaded"
        assert running.registry.wait_for_version(MODEL_NAME, 1, "END", timeout=120), "version 1 never retired"
        assert [s["state"] for s in client.status()["model_version_status"]] == ["END", "AVAILABLE"]
        wait_for_answers(len(answers) + 3)
    finally:
        stop.set()
        thread.join()
        running.stop()
    assert not failures
    assert not np.array_equal(answers[-1], before["boxes"])  # the new weights answer now
    assert np.array_equal(answers[0], before["boxes"])  # the old version answered before the swap


def test_client_errors_carry_the_status_on_both_transports(server, sample_images):
    from detseg.serving.client import ServingClientError

    for address, not_found in ((server.rest_url, 404), (server.grpc_target, "NOT_FOUND")):
        assert ServingClient(address, MODEL_NAME, version=1).predict(sample_images[:1])["boxes"].shape == (1, 4, 4)
        with pytest.raises(ServingClientError) as raised:
            ServingClient(address, MODEL_NAME, version=9).predict(sample_images[:1])
        assert raised.value.status == not_found and "Specific(tiny, 9)" in raised.value.message
