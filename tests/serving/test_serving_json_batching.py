"""REST JSON tensors (TF Serving's rules) and the batching layer, without a server."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tensorflow as tf

from detseg.serving.batching import BatchingOptions, BatchScheduler, split_outputs
from detseg.serving.errors import ServingError
from detseg.serving.json_tensors import COLUMNAR, ROW, request_arrays, response_json


def test_row_format_with_one_input_takes_plain_values_and_b64():
    arrays, request_format = request_arrays({"instances": ["plain", {"b64": "aGk="}]}, {"images": tf.string})
    assert request_format == ROW
    assert arrays["images"].tolist() == [b"plain", b"hi"]


def test_row_format_with_named_inputs_stacks_each_input():
    dtypes = {"a": tf.float32, "b": tf.int32}
    arrays, _ = request_arrays({"instances": [{"a": [1.5, 2], "b": 3}, {"a": [0, -1], "b": 4}]}, dtypes)
    np.testing.assert_array_equal(arrays["a"], np.array([[1.5, 2], [0, -1]], np.float32))
    assert arrays["a"].dtype == np.float32 and arrays["b"].tolist() == [3, 4] and arrays["b"].dtype == np.int32
    with pytest.raises(ServingError, match="keys must be equal to: a,b"):
        request_arrays({"instances": [{"a": [1.0, 2.0]}]}, dtypes)
    with pytest.raises(ServingError, match="Expecting shape"):
        request_arrays({"instances": [{"a": [1.0], "b": 1}, {"a": [1.0, 2.0], "b": 2}]}, dtypes)
    with pytest.raises(ServingError, match="plain list"):
        request_arrays({"instances": [[1.0, 2.0]]}, dtypes)


def test_columnar_format_takes_an_object_of_inputs():
    dtypes = {"a": tf.uint8, "b": tf.string}
    arrays, request_format = request_arrays({"inputs": {"a": [[1, 2], [3, 4]], "b": ["x"], "ignored": 1}}, dtypes)
    assert request_format == COLUMNAR and arrays["a"].dtype == np.uint8 and arrays["b"].shape == (1,)
    with pytest.raises(ServingError, match="Missing named input: b"):
        request_arrays({"inputs": {"a": [1]}}, dtypes)
    with pytest.raises(ServingError, match="out of range"):
        request_arrays({"inputs": {"a": [256], "b": ["x"]}}, dtypes)


@pytest.mark.parametrize("value,message", [
    ([["a"], "b"], "incorrect level"), ([["a"], ["b", "c"]], "unexpected size"), (["a", ["b"]], "unexpected level"),
    ([{"b64": "***"}], "Unable to base64 decode"), ([1], "DT_STRING"),
])
def test_string_tensors_must_be_dense_and_well_typed(value, message):
    with pytest.raises(ServingError, match=message):
        request_arrays({"inputs": value}, {"images": tf.string})


def test_response_row_and_columnar_shapes():
    outputs = {"scores": np.array([[0.1, 0.25]], np.float32), "name_bytes": np.array([b"\x00\xff"], object),
               "label": np.array([b"cat"], object)}
    row = json.loads(response_json(outputs, ROW))
    assert row == {"predictions": [{"label": "cat", "name_bytes": {"b64": "AP8="}, "scores": [0.1, 0.25]}]}
    assert b"0.1," in response_json(outputs, ROW)  # float32 0.1 printed as 0.1, not 0.10000000149011612
    columnar = json.loads(response_json(outputs, COLUMNAR))
    assert columnar == {"outputs": {"label": ["cat"], "name_bytes": [{"b64": "AP8="}], "scores": [[0.1, 0.25]]}}
    single = {"y": np.array([1, 2], np.int32)}
    assert json.loads(response_json(single, ROW)) == {"predictions": [1, 2]}
    assert json.loads(response_json(single, COLUMNAR)) == {"outputs": [1, 2]}
    with pytest.raises(ServingError, match="inconsistent batch size"):
        response_json({"a": np.zeros(2), "b": np.zeros(3)}, ROW)


def _doubling(calls: list):
    def run(inputs):
        calls.append(len(inputs["x"]))
        if np.any(inputs["x"] < 0):
            raise ServingError("INVALID_ARGUMENT", "negative input")
        return {"y": inputs["x"] * 2}
    return run


def _held_scheduler(max_batch_size: int) -> tuple[BatchScheduler, threading.Event]:
    """A one-thread scheduler whose batch thread is busy until the returned event is set.

    While the only batch thread runs the holding request (another key), requests queue
    up; `_submit_together` waits until they all are queued, then releases the thread, so
    which requests merge depends on the queue, never on how fast threads start. The batch
    timeout only has to pass by then (or soon after): it is 1 ms.
    """
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=max_batch_size, batch_timeout_micros=1000,
                                               num_batch_threads=1))
    running, release = threading.Event(), threading.Event()

    def hold(inputs):
        running.set()
        release.wait()
        return inputs

    holder = threading.Thread(target=scheduler.run, args=("hold", hold, {"x": np.zeros(max_batch_size)}))
    holder.start()
    assert running.wait(60), "the holding request never reached the batch thread"
    return scheduler, release


def _submit_together(scheduler: BatchScheduler, release: threading.Event, run, inputs_list: list) -> list:
    """Queue every request behind the held batch thread, release it, return answers (or errors) in order."""
    results: list = [None] * len(inputs_list)

    def one(index: int) -> None:
        try:
            results[index] = scheduler.run("key", run, inputs_list[index])
        except ServingError as error:
            results[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs_list))]
    for thread in threads:
        thread.start()
    queued = scheduler.wait_until_queued(sum(len(inputs["x"]) for inputs in inputs_list), timeout=60)
    release.set()
    for thread in threads:
        thread.join()
    assert queued, "the requests never all reached the queue"
    return results


def test_scheduler_merges_concurrent_requests_up_to_max_batch_size():
    calls: list = []
    scheduler, release = _held_scheduler(max_batch_size=4)
    try:
        inputs = [{"x": np.array([i, 10 + i])} for i in range(4)]
        results = _submit_together(scheduler, release, _doubling(calls), inputs)
        oversized = scheduler.run("key", _doubling(calls), {"x": np.arange(6)})
    finally:
        release.set()
        scheduler.close()
    for given, result in zip(inputs, results):
        np.testing.assert_array_equal(result["y"], given["x"] * 2)
    assert calls == [4, 4, 6]  # four 2-row requests -> two full batches; too big to merge: alone
    assert oversized["y"].tolist() == [0, 2, 4, 6, 8, 10]
    assert (scheduler.batches_run, scheduler.requests_run) == (1 + 3, 1 + 5)  # the holding request included


def test_a_failing_request_does_not_fail_the_others_in_its_batch():
    calls: list = []
    scheduler, release = _held_scheduler(max_batch_size=8)
    try:
        results = _submit_together(scheduler, release, _doubling(calls),
                                   [{"x": np.array([1])}, {"x": np.array([-1])}, {"x": np.array([3])}])
    finally:
        release.set()
        scheduler.close()
    assert calls == [3, 1, 1, 1]  # merged into one batch, which failed; then each request alone
    assert isinstance(results[1], ServingError) and results[1].code == "INVALID_ARGUMENT"
    assert results[0]["y"].tolist() == [2] and results[2]["y"].tolist() == [6]


def test_split_crops_batch_padded_class_maps_back_to_each_request():
    class Task:
        def __init__(self, rows):
            self.rows = rows

    class_map = np.full((3, 50, 60), -1, np.int32)
    class_map[0, :20, :30] = 1
    class_map[1, :50, :10] = 2
    class_map[2, :10, :60] = 3
    merged = {"class_map": class_map, "image_height": np.array([20, 50, 10]), "image_width": np.array([30, 10, 60])}
    first, second = split_outputs(merged, [Task(1), Task(2)])
    assert first["class_map"].shape == (1, 20, 30) and np.all(first["class_map"] == 1)
    assert second["class_map"].shape == (2, 50, 60)
    with pytest.raises(ServingError, match="no batch dimension"):
        split_outputs({"y": np.zeros(2)}, [Task(1), Task(2)])


def test_split_crops_masks_back_to_each_requests_detections():
    class Task:
        def __init__(self, rows):
            self.rows = rows

    # The merged batch's masks have a slot per detection up to its largest count (4).
    merged = {"masks": np.ones((3, 4, 50, 60), np.uint8), "num_detections": np.array([1, 4, 2]),
              "image_height": np.array([20, 50, 10]), "image_width": np.array([30, 10, 60])}
    first, second = split_outputs(merged, [Task(1), Task(2)])
    assert first["masks"].shape == (1, 1, 20, 30)  # what the first request alone gets
    assert second["masks"].shape == (2, 4, 50, 60)


def test_closed_scheduler_refuses_work():
    scheduler = BatchScheduler(BatchingOptions())
    scheduler.close()
    with pytest.raises(ServingError, match="shutting down"):
        scheduler.run("key", _doubling([]), {"x": np.array([1])})
