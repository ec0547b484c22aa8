"""Merge concurrent requests into one model call, like TF Serving's batching layer.

Requests for the same servable, signature and per-row input shape queue together. A
queue becomes a batch when it holds `max_batch_size` rows, or when its oldest request
has waited `batch_timeout_micros` - and a batch thread is free (while all
`num_batch_threads` are busy, queues keep filling, so load makes batches bigger).
Inputs are concatenated along dimension 0 and the outputs split back by rows.

Two details make a merged answer equal the answer alone:
- if a merged batch fails (one request held a corrupt image), each request is re-run on
  its own, so only the faulty one fails;
- outputs padded to the batch's largest image (`class_map`, `masks`, see
  `serving.task_outputs`) and, for `masks`, to its largest `num_detections`, are cropped
  back to the request's own largest `image_height`, `image_width` and `num_detections`
  (`PADDED_OUTPUTS`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

from detseg.serving.errors import ServingError

Arrays = dict[str, np.ndarray]
RunBatch = Callable[[Arrays], Arrays]

# Outputs padded to the batch's largest value of other outputs: {output: {axis: size output}}.
PADDED_OUTPUTS = {
    "class_map": {1: "image_height", 2: "image_width"},
    "masks": {1: "num_detections", 2: "image_height", 3: "image_width"},
}


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters (the ones that matter for one process)."""

    max_batch_size: int = 8
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 2
    max_enqueued_rows: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.batch_timeout_micros < 0:
            raise ValueError(f"batching needs max_batch_size >= 1, num_batch_threads >= 1 and "
                             f"batch_timeout_micros >= 0, got {self}")


@dataclass
class _Task:
    inputs: Arrays
    rows: int
    run: RunBatch
    enqueued: float
    future: Future


def _rows_of(inputs: Arrays) -> int:
    sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError("INVALID_ARGUMENT", f"batched inputs must share dimension 0, got sizes "
                                               f"{ {k: np.shape(v) for k, v in inputs.items()} }")
    return sizes.pop()


def split_outputs(outputs: Arrays, tasks: list[_Task]) -> list[Arrays]:
    """Split merged outputs by each task's rows; crop batch-padded dense outputs back."""
    total = sum(t.rows for t in tasks)
    for name, value in outputs.items():
        if np.ndim(value) == 0 or np.shape(value)[0] != total:
            raise ServingError("INTERNAL", f"output {name} has no batch dimension of {total} rows: "
                                           f"shape {np.shape(value)}")
    parts, start = [], 0
    for task in tasks:
        rows = slice(start, start + task.rows)
        part = {name: value[rows] for name, value in outputs.items()}
        for name, sizes in PADDED_OUTPUTS.items():
            if name in part and task.rows and all(size in part for size in sizes.values()):
                index = [slice(None)] * part[name].ndim
                for axis, size in sizes.items():
                    index[axis] = slice(0, int(np.max(part[size])))
                part[name] = part[name][tuple(index)]
        parts.append(part)
        start += task.rows
    return parts


class BatchScheduler:
    """Queues requests by key and runs merged batches on `num_batch_threads` threads."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._queues: dict[Hashable, deque[_Task]] = {}
        self._condition = threading.Condition()
        self._idle_threads = options.num_batch_threads
        self._enqueued_rows = 0
        self._closed = False
        self.batches_run = 0   # model calls made (a merged batch counts once)
        self.requests_run = 0  # requests answered through those calls
        self._executor = ThreadPoolExecutor(options.num_batch_threads, thread_name_prefix="batch")
        self._scheduler = threading.Thread(target=self._schedule_loop, name="batch-scheduler", daemon=True)
        self._scheduler.start()

    def run(self, key: Hashable, run: RunBatch, inputs: Arrays) -> Arrays:
        """Run `run(inputs)` merged with concurrent requests of the same `key`; blocks for the answer."""
        task = _Task(inputs, _rows_of(inputs), run, time.monotonic(), Future())
        with self._condition:
            if self._closed:
                raise ServingError("UNAVAILABLE", "the server is shutting down")
            if self._enqueued_rows + task.rows > self.options.max_enqueued_rows:
                raise ServingError("UNAVAILABLE", "batch queue is full; retry later")
            self._queues.setdefault(key, deque()).append(task)
            self._enqueued_rows += task.rows
            self._condition.notify_all()
        return task.future.result()

    def wait_until_queued(self, rows: int, timeout: float | None = None) -> bool:
        """Block until at least `rows` rows wait in the queues (True), or `timeout` s pass (False).

        Rows leave the queues when a batch thread takes them, so while every batch thread
        is busy this counts what the next batches will merge: a caller (a test, a load
        probe) synchronizes on it instead of sleeping through batch timeouts.
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._enqueued_rows >= rows, timeout)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._scheduler.join(timeout=5)
        self._executor.shutdown(wait=True)

    def _ready_batch(self, now: float) -> tuple[list[_Task], float | None]:
        """Pop one ready batch (or none) and the time until the next queue times out."""
        timeout = self.options.batch_timeout_micros / 1e6
        next_deadline = None
        for key, queue in list(self._queues.items()):
            rows = sum(t.rows for t in queue)
            deadline = queue[0].enqueued + timeout
            if rows >= self.options.max_batch_size or now >= deadline:
                batch = [queue.popleft()]
                taken = batch[0].rows
                while queue and taken + queue[0].rows <= self.options.max_batch_size:
                    taken += queue[0].rows
                    batch.append(queue.popleft())
                if not queue:
                    del self._queues[key]
                self._enqueued_rows -= taken
                return batch, None
            next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        return [], next_deadline

    def _schedule_loop(self) -> None:
        with self._condition:
            while True:
                if self._closed and not self._queues:
                    return
                batch, deadline = ([], None) if self._idle_threads == 0 else self._ready_batch(time.monotonic())
                if batch:
                    self._idle_threads -= 1
                    self.batches_run += 1
                    self.requests_run += len(batch)
                    self._executor.submit(self._execute, batch)
                    continue
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._condition.wait(wait)

    def _execute(self, batch: list[_Task]) -> None:
        try:
            if len(batch) == 1:
                self._run_alone(batch[0])
            else:
                self._run_merged(batch)
        finally:
            with self._condition:
                self._idle_threads += 1
                self._condition.notify_all()

    @staticmethod
    def _run_alone(task: _Task) -> None:
        try:
            task.future.set_result(task.run(task.inputs))
        except BaseException as error:  # handed to the waiting request thread
            task.future.set_exception(error)

    def _run_merged(self, batch: list[_Task]) -> None:
        try:
            merged = {name: np.concatenate([t.inputs[name] for t in batch], axis=0) for name in batch[0].inputs}
            parts = split_outputs(batch[0].run(merged), batch)
        except Exception:  # one bad request must not fail the others: run each alone
            for task in batch:
                self._run_alone(task)
            return
        for task, part in zip(batch, parts):
            task.future.set_result(part)
