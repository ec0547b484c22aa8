"""TF Serving's REST JSON <-> numpy tensors, following `json_tensor.cc` rule by rule.

Requests: `{"signature_name": str?, "instances": [...]}` (row format: one element per
batch row; elements are objects keyed by input name, or plain values when the signature
has one input) or `{"signature_name": str?, "inputs": ...}` (columnar: an object of
name -> tensor, or a plain tensor when there is one input). Binary strings are
`{"b64": "<base64>"}`. NaN / Infinity tokens are accepted, as TF Serving does.

Responses: row requests get `{"predictions": [...]}` (per row an object of outputs, or
the value itself when there is one output); columnar requests get `{"outputs": ...}`.
String outputs whose name ends in `_bytes` are written as `{"b64": ...}`. float32 values
are written with the shortest decimal that reads back to the same float32.
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from typing import Any

import numpy as np
import tensorflow as tf

from detseg.serving.errors import invalid_argument

ROW, COLUMNAR = "row", "columnar"
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Body bytes -> the top-level JSON object (errors are INVALID_ARGUMENT, as in TF Serving)."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: document nested too deeply") from None
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {_short(document)} Is not object")
    return document


def signature_name_of(document: dict[str, Any]) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_short(document)} not formatted correctly. "
                               f"'signature_name' key must be a string value.")
    return name


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 60, 60


def _short(value: Any) -> str:
    """A bounded rendering of a JSON value for error messages (never the whole 60 MB body)."""
    return _SHORT.repr(value)


def _is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def _decode_base64(value: dict[str, str]) -> bytes:
    try:
        return base64.b64decode(value[BASE64_KEY], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _dense_shape(value: Any) -> list[int]:
    """The shape implied by following the first element at each level (as TF Serving does)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _string_leaves(value: Any, shape: list[int], depth: int, out: list[bytes]) -> None:
    """Collect the strings / b64 objects of a nested list, checking it is dense with `shape`."""
    if isinstance(value, list):
        if depth >= len(shape):
            raise invalid_argument(f"Encountered list at unexpected level: {depth} expected < {len(shape)}")
        if len(value) != shape[depth]:
            raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {depth} "
                                   f"expected size: {shape[depth]}")
        for item in value:
            _string_leaves(item, shape, depth + 1, out)
        return
    if depth != len(shape):
        raise invalid_argument(f"JSON Value: {_short(value)} found at incorrect level: {depth + 1} "
                               f"in the JSON DOM. Expected at level: {len(shape)}")
    if isinstance(value, str):
        out.append(value.encode("utf-8"))
    elif _is_base64_object(value):
        out.append(_decode_base64(value))
    else:
        raise invalid_argument(f"JSON Value: {_short(value)} is not of expected type: DT_STRING")


def json_to_array(value: Any, dtype: tf.DType) -> np.ndarray:
    """One JSON tensor (scalar or nested lists) -> a numpy array of `dtype`."""
    if dtype == tf.string:
        shape = _dense_shape(value)
        leaves: list[bytes] = []
        _string_leaves(value, shape, 0, leaves)
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise invalid_argument(f"JSON Value: {_short(value)} is not a dense tensor of {dtype.name}") from None
    return _cast_numbers(array, dtype, value)


def _cast_numbers(array: np.ndarray, dtype: tf.DType, value: Any) -> np.ndarray:
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(dtype.as_numpy_dtype)
    type_error = invalid_argument(f"JSON Value: {_short(value)} is not of expected type: {dtype.name}")
    if dtype == tf.bool:
        if kind != "b":
            raise type_error
        return array
    if dtype.is_integer:
        if kind not in "iu":
            raise type_error
        if array.min() < dtype.min or array.max() > dtype.max:
            raise invalid_argument(f"JSON Value: {_short(value)} is out of range for {dtype.name} "
                                   f"[{dtype.min}, {dtype.max}]")
        return array.astype(dtype.as_numpy_dtype)
    if dtype.is_floating:
        if kind not in "iuf":
            raise type_error
        cast = array.astype(dtype.as_numpy_dtype)
        if np.any(np.isinf(cast) & np.isfinite(array.astype(np.float64))):
            raise invalid_argument(f"Cannot convert JSON value: {_short(value)} to {dtype.name} "
                                   f"without loss of precision.")
        return cast
    raise invalid_argument(f"Conversion of JSON Value: {_short(value)} to type: {dtype.name} is not supported")


def _instances_to_arrays(instances: Any, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_base64_object(instances[0])
    if not named and len(dtypes) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                               "input tensors required as per tensorinfo_map")
    rows: dict[str, list[np.ndarray]] = {name: [] for name in dtypes}
    for index, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_base64_object(element)
        if is_object != named:
            expected = "object" if named else "value/list"
            raise invalid_argument(f"Expecting {expected} but got {'object' if is_object else 'value/list'} "
                                   f"at item {index} of input list")
        items = element if named else {next(iter(dtypes)): element}
        if set(items) != set(dtypes):
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. JSON object: "
                                   f"{_short(element)} keys must be equal to: {','.join(sorted(dtypes))}")
        for name, value in items.items():
            array = json_to_array(value, dtypes[name])
            if rows[name] and rows[name][0].shape != array.shape:
                raise invalid_argument(f"Failed to process element: {index} key: {name} of 'instances' list. "
                                       f"Error: Expecting shape {list(rows[name][0].shape)} but got: "
                                       f"{list(array.shape)}")
            rows[name].append(array)
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _inputs_to_arrays(inputs: Any, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_base64_object(inputs):
        if len(dtypes) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   "input tensors required as per tensorinfo_map")
        name = next(iter(dtypes))
        return {name: json_to_array(inputs, dtypes[name])}
    arrays = {}
    for name, dtype in dtypes.items():
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = json_to_array(inputs[name], dtype)
    return arrays


def request_arrays(document: dict[str, Any], dtypes: dict[str, tf.DType]) -> tuple[dict[str, np.ndarray], str]:
    """The input tensors of a predict request and its format (ROW or COLUMNAR).

    `dtypes` maps the signature's input names to their dtypes.
    """
    if "instances" in document and "inputs" in document:
        raise invalid_argument(f"JSON Value: {_short(document)} Not formatted correctly expecting only "
                               f"one of 'inputs' or 'instances' keys to exist ")
    if "instances" in document:
        return _instances_to_arrays(document["instances"], dtypes), ROW
    if "inputs" in document:
        return _inputs_to_arrays(document["inputs"], dtypes), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def array_to_json(name: str, array: np.ndarray) -> Any:
    """An output tensor -> nested JSON values (see module doc for strings and floats)."""
    array = np.asarray(array)
    if array.dtype.kind in "OS":
        as_bytes = name.endswith(BYTES_SUFFIX)

        def text(item: bytes) -> Any:
            if as_bytes:
                return {BASE64_KEY: base64.b64encode(item).decode("ascii")}
            return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)

        flat = [text(item) for item in array.reshape(-1).tolist()]
        return _nest(flat, array.shape)
    if array.dtype == np.float32:
        # str() of a float32 is its shortest round-trip decimal; float() of that prints the same.
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = int(np.prod(shape[1:]))
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def response_json(outputs: dict[str, np.ndarray], request_format: str) -> bytes:
    """Outputs -> the predict response body for a ROW or COLUMNAR request."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    values = {name: array_to_json(name, outputs[name]) for name in names}
    if request_format == COLUMNAR:
        body = {"outputs": values[names[0]] if len(names) == 1 else values}
        return json.dumps(body, separators=(",", ":")).encode("utf-8")
    batch_sizes = {name: np.shape(outputs[name])[0] if np.ndim(outputs[name]) else None for name in names}
    for name, size in batch_sizes.items():
        if size is None:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if size != batch_sizes[names[0]]:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: {size} "
                                   f"expecting: {batch_sizes[names[0]]}")
    rows = batch_sizes[names[0]]
    if len(names) == 1:
        predictions = values[names[0]]
    else:
        predictions = [{name: values[name][i] for name in names} for i in range(rows)]
    return json.dumps({"predictions": predictions}, separators=(",", ":")).encode("utf-8")
