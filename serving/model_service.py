"""Model status and metadata, as TF Serving's protos and as its REST JSON.

`GetModelStatus` and `GetModelMetadata` answers are built once, as the real
`tensorflow_serving.apis` protos (what gRPC returns); the REST API prints those protos
the way TF Serving does: snake_case field names, default values included, int64 as
strings, and metadata as `{"model_spec": ..., "metadata": {"signature_def": ...}}`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from detseg.serving.errors import CODES, invalid_argument
from detseg.serving.registry import ModelRegistry

SIGNATURE_DEF_FIELD = "signature_def"


def model_spec(name: str, version: int | None = None, label: str | None = None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


def spec_version(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    """(version, label) requested by a ModelSpec; both None means "latest"."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def model_status(registry: ModelRegistry, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse for a spec (all versions seen, or the one asked for)."""
    if not spec.name:
        raise invalid_argument("Missing model name in request.")
    version, label = spec_version(spec)
    if label is not None:
        version = registry.servable(spec.name, label=label).version
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, status in sorted(registry.version_statuses(spec.name, version).items()):
        item = response.model_version_status.add()
        item.version = number
        item.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        item.status.error_code = CODES[status.error_code]
        item.status.error_message = status.error_message
    return response


def model_metadata(registry: ModelRegistry, spec: model_pb2.ModelSpec,
                   fields: list[str] | tuple[str, ...] = (SIGNATURE_DEF_FIELD,)
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse with the servable's whole SignatureDef map (TF Serving's only field)."""
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field_name in fields:
        if field_name != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field_name} is not supported")
    if not spec.name:
        raise invalid_argument("Missing model name in request.")
    version, label = spec_version(spec)
    servable = registry.servable(spec.name, version, label)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict[str, Any]:
    return _as_dict(response)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict[str, Any]:
    """TF Serving's REST metadata shape: the SignatureDefMap unpacked under metadata.signature_def."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
    return {"model_spec": _as_dict(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _as_dict(signature_map)}}
