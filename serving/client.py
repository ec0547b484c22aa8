"""One client for TF Serving's REST and gRPC APIs: the embedded server or real TF Serving.

    client = ServingClient("http://127.0.0.1:8501", "shapes")   # REST
    client = ServingClient("grpc://127.0.0.1:8500", "shapes")   # gRPC ("host:port" works too)
    outputs = client.predict([open("a.jpg", "rb").read()])       # dict of numpy arrays
    client.status(); client.metadata()                           # REST JSON shapes, both transports

Both transports return the same things: outputs as numpy arrays with the signature's
dtypes (strings as `bytes`), status and metadata as TF Serving's REST JSON dicts. Only
the address decides the transport, so moving to real TF Serving changes nothing else.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from typing import Any, Sequence
from urllib.parse import quote, urlsplit

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from detseg.serving.model_service import metadata_json, model_spec, status_json

IMAGES_SIGNATURE, IMAGES_INPUT = "serving_default", "images"
PIXELS_SIGNATURE, PIXELS_INPUT = "serving_pixels", "pixels"


class ServingClientError(RuntimeError):
    """The server refused or failed a request; `status` is the HTTP status or gRPC code name."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _named_inputs(images: Any, signature_name: str | None) -> tuple[dict[str, Any], str]:
    """Encoded images -> serving_default's `images`; a uint8 array -> serving_pixels' `pixels`."""
    if isinstance(images, dict):
        return images, signature_name or IMAGES_SIGNATURE
    if isinstance(images, np.ndarray):
        return {PIXELS_INPUT: images.astype(np.uint8)}, signature_name or PIXELS_SIGNATURE
    encoded = list(images)
    if not all(isinstance(item, (bytes, bytearray)) for item in encoded):
        raise TypeError("predict() takes a list of encoded images (bytes), a uint8 array [B, H, W, 3], "
                        "or a dict of named inputs")
    return {IMAGES_INPUT: np.array([bytes(b) for b in encoded], dtype=object)}, signature_name or IMAGES_SIGNATURE


class _RestTransport:
    """HTTP/1.1 with one kept-alive connection per thread."""

    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._netloc, self._prefix, self._timeout_s = parts.netloc, parts.path.rstrip("/"), timeout_s
        self._local = threading.local()

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):  # a kept-alive connection the server closed is reopened once
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = self._connection_class(self._netloc, timeout=self._timeout_s)
            try:
                connection.request(method, self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        document = json.loads(data) if data else {}
        if response.status != 200:
            raise ServingClientError(response.status, document.get("error", data.decode("utf-8", "replace")))
        return document

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def _json_value(array: np.ndarray) -> Any:
    if array.dtype.kind in "OS":
        flat = [{"b64": base64.b64encode(bytes(item)).decode("ascii")} for item in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


def _from_json(value: Any, dtype_name: str) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(dtype_name.lower().replace("dt_", ""))
    if dtype != tf.string:
        return np.array(value, dtype=dtype.as_numpy_dtype)
    array = np.array(value, dtype=object)
    flat = [base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode("utf-8") for v in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


class ServingClient:
    """`predict`, `status` and `metadata` for one model over REST (http://) or gRPC (grpc:// or host:port)."""

    def __init__(self, address: str, model_name: str, version: int | None = None, timeout_s: float = 60.0):
        self.model_name, self.version, self.timeout_s = model_name, version, timeout_s
        self.protocol = "rest" if address.startswith(("http://", "https://")) else "grpc"
        self._output_dtypes: dict[str, dict[str, str]] = {}
        if self.protocol == "rest":
            self._rest = _RestTransport(address, timeout_s)
            self._model_path = f"/v1/models/{quote(model_name, safe='')}" + (
                f"/versions/{version}" if version is not None else "")
        else:
            target = address.split("://", 1)[1] if address.startswith("grpc://") else address
            self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1),
                                                                   ("grpc.max_send_message_length", -1)])
            self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _grpc_call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ServingClientError(error.code().name, error.details() or "") from None

    def status(self) -> dict[str, Any]:
        """GetModelStatus as TF Serving's REST JSON: {"model_version_status": [...]}."""
        if self.protocol == "rest":
            return self._rest.request("GET", self._model_path)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(self.model_name, self.version))
        return status_json(self._grpc_call(self._models.GetModelStatus, request))

    def metadata(self) -> dict[str, Any]:
        """GetModelMetadata as TF Serving's REST JSON: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
        if self.protocol == "rest":
            return self._rest.request("GET", self._model_path + "/metadata")
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(self.model_name, self.version), metadata_field=["signature_def"])
        return metadata_json(self._grpc_call(self._prediction.GetModelMetadata, request))

    def predict(self, images: Sequence[bytes] | np.ndarray | dict[str, Any],
                signature_name: str | None = None) -> dict[str, np.ndarray]:
        """Encoded images (list of bytes), uint8 pixels [B, H, W, 3], or named inputs -> outputs by name."""
        inputs, signature_name = _named_inputs(images, signature_name)
        if self.protocol == "rest":
            return self._predict_rest(inputs, signature_name)
        request = predict_pb2.PredictRequest(model_spec=model_spec(self.model_name, self.version))
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._grpc_call(self._prediction.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _predict_rest(self, inputs: dict[str, Any], signature_name: str) -> dict[str, np.ndarray]:
        payload = {"signature_name": signature_name,
                   "inputs": {name: _json_value(np.asarray(value)) for name, value in inputs.items()}}
        outputs = self._rest.request("POST", self._model_path + ":predict", payload)["outputs"]
        dtypes = self._signature_output_dtypes(signature_name)
        if len(dtypes) == 1:
            outputs = {next(iter(dtypes)): outputs}
        return {name: _from_json(value, dtypes[name]) for name, value in outputs.items()}

    def _signature_output_dtypes(self, signature_name: str) -> dict[str, str]:
        """JSON has no dtypes: take them from the signature's metadata (fetched once)."""
        if signature_name not in self._output_dtypes:
            signatures = self.metadata()["metadata"]["signature_def"]["signature_def"]
            if signature_name not in signatures:
                raise ServingClientError(400, f"signature {signature_name!r} not in {sorted(signatures)}")
            outputs = signatures[signature_name]["outputs"]
            self._output_dtypes[signature_name] = {name: info["dtype"] for name, info in outputs.items()}
        return self._output_dtypes[signature_name]

    def close(self) -> None:
        if self.protocol == "rest":
            self._rest.close()
        else:
            self._channel.close()

    def __enter__(self) -> "ServingClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
