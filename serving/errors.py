"""Serving errors with TF Serving's status codes, and their HTTP and gRPC forms.

TF Serving answers every failure with a `tensorflow::Status`; its REST server maps the
code to an HTTP status (`http_server.cc`: INVALID_ARGUMENT, FAILED_PRECONDITION and
OUT_OF_RANGE -> 400, NOT_FOUND -> 404, RESOURCE_EXHAUSTED -> 429, ...) and its gRPC
server passes the code through. `ServingError` carries that code; so do TensorFlow's
own runtime errors (`tf.errors.OpError.error_code`), which `from_exception` converts.
"""

from __future__ import annotations

import re

import grpc

# Canonical status codes (google.rpc / tensorflow::error), by name.
CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
CODE_NAMES = {number: name for name, number in CODES.items()}

HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(ValueError):
    """A request failed with a canonical status `code` (e.g. "NOT_FOUND") and a message."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code)


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def from_exception(error: BaseException) -> ServingError:
    """Any exception from running a model -> a ServingError with the best matching code.

    TensorFlow runtime errors keep their own code (a corrupt image is INVALID_ARGUMENT);
    Python argument errors from calling a signature become INVALID_ARGUMENT; anything
    else is INTERNAL.
    """
    if isinstance(error, ServingError):
        return error
    op_code = getattr(error, "error_code", None)
    if isinstance(op_code, int) and op_code in CODE_NAMES and op_code != 0:
        message = getattr(error, "message", None) or str(error)
        return ServingError(CODE_NAMES[op_code], _op_error_message(message))
    if isinstance(error, (TypeError, ValueError)):
        return invalid_argument(_first_lines(str(error)))
    return ServingError("INTERNAL", f"{type(error).__name__}: {_first_lines(str(error))}")


_OP_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[{{")


def _op_error_message(message: str) -> str:
    """A TF runtime error's own words and the node it came from, without the graph trace.

    "Graph execution error: Detected at node map/while/decode_image/DecodeImage ...
    Unknown image file format. ..." -> "Unknown image file format. ... (node map/while/...)".
    """
    node = re.search(r"Detected at node (\S+)", message)
    lines = [line.strip() for line in message.splitlines()]
    said = " ".join(line for line in lines if line and not line.startswith(_OP_NOISE))
    said = said or message.strip()
    return _first_lines(f"{said} (node {node.group(1)})" if node else said)


def _first_lines(message: str, limit: int = 600) -> str:
    """TF messages carry long graph stacks; the first lines say what went wrong."""
    message = message.strip()
    return message if len(message) <= limit else message[:limit] + " ..."
