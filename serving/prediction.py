"""The predict path shared by the REST and gRPC front ends.

Resolve the servable (name, version or label), check the request's tensors against the
signature's SignatureDef (names, dtypes, fixed dimensions) so a bad request is a clear
INVALID_ARGUMENT instead of a TensorFlow trace, then run the signature - through the
batching layer when it is on - and return numpy outputs.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from detseg.serving.batching import BatchingOptions, BatchScheduler
from detseg.serving.errors import from_exception, invalid_argument
from detseg.serving.registry import ModelRegistry, Servable

DEFAULT_SIGNATURE = "serving_default"


def signature_or_default(signature_name: str) -> str:
    return signature_name or DEFAULT_SIGNATURE


def _dims(tensor_info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    shape = tensor_info.tensor_shape
    return None if shape.unknown_rank else [d.size for d in shape.dim]


def _check_shape(name: str, array: np.ndarray, expected: list[int] | None) -> None:
    if expected is None:
        return
    fits = len(expected) == array.ndim and all(e < 0 or e == a for e, a in zip(expected, array.shape))
    if not fits:
        raise invalid_argument(f"input '{name}' has shape {list(array.shape)}, but the signature expects "
                               f"{expected} (-1 = any size)")


def _check_dtype(name: str, array: np.ndarray, dtype: tf.DType) -> np.ndarray:
    if dtype == tf.string:
        if array.dtype.kind not in "OSU":
            raise invalid_argument(f"input '{name}' must be {dtype.name} (strings), got {array.dtype}")
        return array
    if array.dtype != dtype.as_numpy_dtype:
        raise invalid_argument(f"input '{name}' must be {dtype.name}, got {array.dtype}")
    return array


class PredictionCore:
    """Runs predictions for a registry, batching concurrent requests when `batching` is given."""

    def __init__(self, registry: ModelRegistry, batching: BatchingOptions | None = None):
        self.registry = registry
        self.batcher = BatchScheduler(batching) if batching is not None else None

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def input_dtypes(self, servable: Servable, signature_name: str) -> dict[str, tf.DType]:
        """The signature's input names and dtypes (what REST needs to parse JSON)."""
        signature = servable.signature_def(signature_or_default(signature_name))
        return {name: tf.dtypes.as_dtype(info.dtype) for name, info in sorted(signature.inputs.items())}

    def checked_inputs(self, servable: Servable, signature_name: str,
                       inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        signature = servable.signature_def(signature_or_default(signature_name))
        expected, sent = set(signature.inputs), set(inputs)
        if expected != sent:
            raise invalid_argument(
                f"Request inputs do not match required inputs for model `{servable.name}`. "
                f"Send extra: {sorted(sent - expected)}. Missing but required: {sorted(expected - sent)}.")
        checked = {}
        for name, info in signature.inputs.items():
            array = _check_dtype(name, np.asarray(inputs[name]), tf.dtypes.as_dtype(info.dtype))
            _check_shape(name, array, _dims(info))
            if array.ndim and array.shape[0] == 0:
                # detseg graphs need at least one image (convolutions fail on an empty batch).
                raise invalid_argument(f"input '{name}' holds no images (batch size 0)")
            checked[name] = array
        return checked

    def predict(self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray],
                output_filter: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Run one signature of `servable` on `inputs`; outputs restricted to `output_filter` if given."""
        signature_name = signature_or_default(signature_name)
        signature = servable.signature_def(signature_name)
        wanted = list(output_filter)
        unknown = [n for n in wanted if n not in signature.outputs]
        if unknown:
            raise invalid_argument(f"output tensor alias not found in signature: {unknown[0]} Outputs expected "
                                   f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        inputs = self.checked_inputs(servable, signature_name, inputs)
        function = servable.function(signature_name)
        dtypes = {name: tf.dtypes.as_dtype(info.dtype) for name, info in signature.inputs.items()}

        def run(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            try:
                tensors = {name: tf.constant(arrays[name], dtype=dtypes[name]) for name in arrays}
                return {name: value.numpy() for name, value in function(**tensors).items()}
            except Exception as error:  # TF runtime and argument errors become status codes
                raise from_exception(error) from None

        rows = {np.shape(a)[0] if np.ndim(a) else None for a in inputs.values()}
        if self.batcher is None or len(rows) != 1 or not next(iter(rows)):
            outputs = run(inputs)
        else:
            key = (id(servable), signature_name,
                   tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items())))
            outputs = self.batcher.run(key, run, inputs)
        return {name: outputs[name] for name in wanted} if wanted else outputs
