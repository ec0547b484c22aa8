"""gRPC with the tensorflow-serving-api stubs, parity across transports, and batching on vs off."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_test_models import MODEL_NAME, random_pixels, start_server
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from detseg.serving.batching import BatchingOptions, BatchScheduler
from detseg.serving.client import ServingClient


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def predict_request(images: list[bytes], name: str = MODEL_NAME, signature: str = "serving_default",
                    version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    return request


def test_grpc_predict_equals_rest_predict_equals_in_process_call(server, stubs, exported_detection, sample_images):
    prediction, _ = stubs
    response = prediction.Predict(predict_request(sample_images), timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL_NAME, 1)
    assert response.model_spec.signature_name == "serving_default"
    over_grpc = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    over_rest = ServingClient(server.rest_url, MODEL_NAME).predict(sample_images)
    signature = tf.saved_model.load(str(exported_detection / "1")).signatures["serving_default"]
    in_process = {k: v.numpy() for k, v in signature(images=tf.constant(sample_images)).items()}
    assert sorted(over_grpc) == sorted(over_rest) == sorted(in_process)
    for name in in_process:
        np.testing.assert_array_equal(over_grpc[name], in_process[name], err_msg=name)
        np.testing.assert_array_equal(over_rest[name], in_process[name], err_msg=name)
        assert over_grpc[name].dtype == over_rest[name].dtype


def test_grpc_status_and_metadata(server, stubs):
    prediction, models = stubs
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": MODEL_NAME}), timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    metadata = prediction.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signature_map)
    assert signature_map.signature_def["serving_default"].inputs["images"].dtype == tf.string.as_datatype_enum
    assert signature_map.signature_def["serving_pixels"].inputs["pixels"].dtype == tf.uint8.as_datatype_enum
    rest, over_grpc = ServingClient(server.rest_url, MODEL_NAME), ServingClient(server.grpc_target, MODEL_NAME)
    assert rest.metadata() == over_grpc.metadata() and rest.status() == over_grpc.status()


@pytest.mark.parametrize("make_request,code", [
    (lambda images: predict_request(images, name="nope"), grpc.StatusCode.NOT_FOUND),
    (lambda images: predict_request(images, version=5), grpc.StatusCode.NOT_FOUND),
    (lambda images: predict_request(images, signature="nope"), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda images: predict_request([b"garbage"]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda images: predict_request(images, signature="serving_pixels"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_grpc_errors_carry_tf_serving_codes(stubs, sample_images, make_request, code):
    prediction, _ = stubs
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(make_request(sample_images[:1]), timeout=30)
    assert raised.value.code() == code and raised.value.details()


def test_grpc_rejects_wrong_dtypes_shapes_and_unimplemented_methods(stubs):
    prediction, models = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, "serving_pixels"
    for bad in (np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 4), np.uint8), np.zeros((8, 3), np.uint8)):
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(bad))
        with pytest.raises(grpc.RpcError) as raised:
            prediction.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Classify(classification_pb2.ClassificationRequest(), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as raised:
        models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}), timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def _concurrent_answers(address: str, requests: list, all_sent=lambda: None) -> list[dict[str, np.ndarray]]:
    """Eight clients send their requests at once; `all_sent()` runs while they wait; answers in order."""
    answers: list = [None] * len(requests)

    def ask(index: int) -> None:
        try:
            answers[index] = ServingClient(address, MODEL_NAME).predict(requests[index])
        except Exception as error:  # recorded and asserted below
            answers[index] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    all_sent()
    for thread in threads:
        thread.join()
    return answers


def _hold_batch_thread(batcher: BatchScheduler) -> threading.Event:
    """Keep the batcher's only batch thread busy (a full batch of another key) until the event is set."""
    running, release = threading.Event(), threading.Event()

    def hold(inputs):
        running.set()
        release.wait()
        return inputs

    rows = batcher.options.max_batch_size
    threading.Thread(target=batcher.run, args=("hold", hold, {"x": np.zeros(rows)}), daemon=True).start()
    assert running.wait(60), "the holding batch never started"
    return release


def test_batching_gives_the_same_answers_as_no_batching(server, exported_detection, sample_images):
    pixels = [np.stack([random_pixels(40, 56, seed)]) for seed in range(4)]
    requests = [sample_images[i % 4:i % 4 + 1 + i % 2] for i in range(4)] + pixels  # 8 clients, mixed signatures
    expected = _concurrent_answers(server.grpc_target, requests)
    batching = start_server(exported_detection, rest_api_port=None,
                            batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=1000,
                                                     num_batch_threads=1))
    batcher = batching.core.batcher
    release = _hold_batch_thread(batcher)
    try:
        # The 8 requests queue behind the held batch thread: 6 encoded images (one signature)
        # and 4 pixel rows (the other); once all are queued the thread is released.
        def queue_then_release() -> None:
            queued = batcher.wait_until_queued(sum(len(r) for r in requests), timeout=120)
            release.set()
            assert queued, "the 8 requests never all reached the batch queue"

        answers = _concurrent_answers(batching.grpc_target, requests, queue_then_release)
        for got, want in zip(answers, expected):
            assert not isinstance(got, Exception), got
            for name in want:
                if want[name].dtype.kind == "f":
                    np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
                else:
                    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        # The holding batch, then one merged model call per signature.
        assert (batcher.batches_run, batcher.requests_run) == (1 + 2, 1 + len(requests))
    finally:
        release.set()
        batching.stop()
