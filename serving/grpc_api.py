"""TF Serving's gRPC services with the real `tensorflow_serving.apis` protos.

PredictionService: Predict and GetModelMetadata (Classify, Regress and MultiInference
answer UNIMPLEMENTED: detseg models have predict signatures only).
ModelService: GetModelStatus (HandleReloadConfigRequest answers UNIMPLEMENTED).
Failures carry TF Serving's status codes (NOT_FOUND, INVALID_ARGUMENT, ...) as gRPC codes.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from detseg.serving.errors import from_exception, invalid_argument
from detseg.serving.model_service import model_metadata, model_status, spec_version
from detseg.serving.prediction import PredictionCore, signature_or_default

log = logging.getLogger(__name__)

GRPC_WORKERS = 16


def _abort(context: grpc.ServicerContext, error: BaseException) -> None:
    failure = from_exception(error)
    if failure.code == "INTERNAL":
        log.error("gRPC request failed: %s", failure.message)
    context.abort(failure.grpc_code, failure.message)


def _arrays_from_protos(request: predict_pb2.PredictRequest) -> dict:
    arrays = {}
    for name, tensor in request.inputs.items():
        try:
            arrays[name] = tf.make_ndarray(tensor)
        except Exception as error:  # a malformed TensorProto is the client's fault
            raise invalid_argument(f"input '{name}' is not a valid TensorProto: {error}") from None
    return arrays


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a `PredictionCore`."""

    def __init__(self, core: PredictionCore):
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        try:
            spec = request.model_spec
            if not spec.name:
                raise invalid_argument("Missing ModelSpec")
            version, label = spec_version(spec)
            servable = self.core.registry.servable(spec.name, version, label)
            signature_name = signature_or_default(spec.signature_name)
            outputs = self.core.predict(servable, signature_name, _arrays_from_protos(request),
                                        list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response
        except Exception as error:  # answered as a gRPC status, never a crash
            _abort(context, error)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        try:
            return model_metadata(self.core.registry, request.model_spec, list(request.metadata_field))
        except Exception as error:  # answered as a gRPC status
            _abort(context, error)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over the registry."""

    def __init__(self, core: PredictionCore):
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        try:
            return model_status(self.core.registry, request.model_spec)
        except Exception as error:  # answered as a gRPC status
            _abort(context, error)


def build_grpc_server(core: PredictionCore, host: str, port: int, max_message_bytes: int) -> tuple[grpc.Server, int]:
    """A started-later gRPC server with both services on `host:port`; returns it and the bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", int(max_message_bytes)),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    return server, bound
