"""Reading a legacy (pre-zip) PyTorch `.pth` state dict with numpy only, no torch.

The legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`) is five
things written one after another into the file:

1. a pickle of the magic number `LEGACY_MAGIC`,
2. a pickle of the format version (`LEGACY_PROTOCOL_VERSION`),
3. a pickle of system information (`{"little_endian": True, "type_sizes": {...}}`),
4. the pickled object itself (here an `OrderedDict` of tensor name -> tensor). Each tensor
   is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, and each
   storage is a *persistent id* `("storage", <torch.FloatStorage>, key, device, numel, None)`
   rather than data,
5. a pickle of the storage keys in the order their data follows, then for each storage
   an int64 element count and its raw little-endian bytes.

A pickle can call any importable function, so the file is read with `_RestrictedUnpickler`,
whose `find_class` resolves only `ALLOWED_GLOBALS` (to harmless local stand-ins: nothing
from torch is imported) and refuses every other global by name. Never use `pickle.load`
on such a file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from detseg.models.backbones.weights import BackboneWeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
STORAGE_COUNT_BYTES = 8  # each storage's data is preceded by its element count, int64

# torch storage class name -> numpy dtype of its little-endian elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchCheckpointError(BackboneWeightsError):
    """A `.pth` file is not a readable legacy PyTorch state dict; the message names the file."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a `torch.*Storage` class: only its element dtype matters."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageReference:
    """A persistent id: storage `key` of `numel` elements of `dtype`, data at the file's end."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorReference:
    """What `_rebuild_tensor_v2` describes: a strided view of a storage (strides in elements)."""

    storage: _StorageReference
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorReference:
    """Local stand-in for torch._utils._rebuild_tensor(_v2): records the view, builds nothing."""
    if not isinstance(storage, _StorageReference):
        raise pickle.UnpicklingError("a tensor does not refer to a storage")
    return _TensorReference(storage, int(storage_offset), tuple(int(s) for s in size),
                            tuple(int(s) for s in stride))


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only `ALLOWED_GLOBALS`; storages become `_StorageReference`s."""

    def __init__(self, stream: BinaryIO, source: str):
        super().__init__(stream)
        self._source = source
        self.storages: dict[str, _StorageReference] = {}

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise TorchCheckpointError(
                f"{self._source}: refused to load global '{module}.{name}': a PyTorch state "
                f"dict needs only {sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)} "
                f"(the file may be malicious or not a state dict)")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchCheckpointError(f"{self._source}: unknown persistent id {pid!r:.100}")
        _, storage_type, key, _device, numel = pid[:5]
        reference = _StorageReference(str(key), storage_type.dtype, int(numel))
        self.storages.setdefault(reference.key, reference)
        return self.storages[reference.key]


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a legacy PyTorch `.pth` state dict, as numpy arrays in file order.

    Returns `{name: array}` with torch's own shapes (e.g. a conv weight is
    `[out, in, kh, kw]`) and dtypes (float32 parameters, int64 `num_batches_tracked`).

    Raises `TorchCheckpointError` naming the file when it is truncated, is not a legacy
    PyTorch file (the zip format included), or names any global outside
    `ALLOWED_GLOBALS`.
    """
    path = Path(path)
    source = f"PyTorch weights file {path}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TorchCheckpointError(f"{source}: cannot be read ({error.strerror})") from error
    stream = io.BytesIO(data)
    try:
        _check_header(stream, source)
        state_unpickler = _RestrictedUnpickler(stream, source)
        state = state_unpickler.load()
        storage_keys = _RestrictedUnpickler(stream, source).load()
    except TorchCheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error) as error:
        raise TorchCheckpointError(
            f"{source}: not a complete legacy PyTorch state dict (truncated or corrupt?): "
            f"{type(error).__name__}: {error}") from error
    if not isinstance(state, dict) or not isinstance(storage_keys, list):
        raise TorchCheckpointError(f"{source}: holds a {type(state).__name__}, not a state dict")
    tensors = {name: value for name, value in state.items() if isinstance(value, _TensorReference)}
    storages = _read_storages(data, stream.tell(), [str(key) for key in storage_keys],
                              state_unpickler.storages, source)
    return {name: _tensor_array(tensor, storages, name, source) for name, tensor in tensors.items()}


def _check_header(stream: BinaryIO, source: str) -> None:
    """Reads the magic number, format version and system information pickles."""
    magic = _RestrictedUnpickler(stream, source).load()
    if magic != LEGACY_MAGIC:
        raise TorchCheckpointError(
            f"{source}: not a legacy (pre-zip) PyTorch file (wrong magic number); re-save it "
            f"with torch.save(..., _use_new_zipfile_serialization=False)")
    version = _RestrictedUnpickler(stream, source).load()
    if version != LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(f"{source}: unsupported PyTorch format version {version!r}")
    system = _RestrictedUnpickler(stream, source).load()
    if not isinstance(system, dict) or not system.get("little_endian", False):
        raise TorchCheckpointError(f"{source}: written on a big-endian machine, not supported")


def _read_storages(data: bytes, position: int, keys: list[str],
                   references: dict[str, _StorageReference], source: str) -> dict[str, np.ndarray]:
    """Each storage's elements as a 1-D array; storages follow in the order of `keys`."""
    if set(references) != set(keys) or len(keys) != len(set(keys)):
        raise TorchCheckpointError(f"{source}: its storage list does not match the storages its "
                                   f"tensors refer to (corrupt?)")
    storages = {}
    for key in keys:
        reference = references[key]
        if position + STORAGE_COUNT_BYTES > len(data):
            raise TorchCheckpointError(f"{source}: truncated: storage '{key}' is missing "
                                       f"({len(data)} bytes in the file)")
        (numel,) = struct.unpack_from("<q", data, position)
        position += STORAGE_COUNT_BYTES
        dtype = reference.dtype
        if numel != reference.numel:
            raise TorchCheckpointError(f"{source}: storage '{key}' holds {numel} elements, "
                                       f"its tensors say {reference.numel}")
        end = position + numel * dtype.itemsize
        if numel < 0 or end > len(data):
            raise TorchCheckpointError(f"{source}: truncated: storage '{key}' needs bytes "
                                       f"{position}..{end}, the file has {len(data)}")
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=position)
        position = end
    return storages


def _tensor_array(tensor: _TensorReference, storages: dict[str, np.ndarray], name: str,
                  source: str) -> np.ndarray:
    """A copy of the strided view `tensor` describes, with bounds checked against its storage."""
    storage = storages[tensor.storage.key]
    if any(size < 0 for size in tensor.shape) or any(stride < 0 for stride in tensor.strides):
        raise TorchCheckpointError(f"{source}: tensor '{name}' has a negative size or stride")
    last = tensor.offset + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.strides))
    if 0 in tensor.shape:
        return np.zeros(tensor.shape, storage.dtype)
    if tensor.offset < 0 or last >= storage.size:
        raise TorchCheckpointError(f"{source}: tensor '{name}' reaches past the end of its storage")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[tensor.offset:], shape=tensor.shape,
        strides=tuple(stride * itemsize for stride in tensor.strides), writeable=False)
    # A C-ordered copy in native byte order, whatever the file's strides (some are channels-last).
    return np.ascontiguousarray(view, dtype=storage.dtype.newbyteorder("="))
