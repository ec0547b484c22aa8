"""Loading pretrained weights into a detseg backbone: ImageNet, or a local file.

Three sources (`build_backbone(..., weights=...)` picks one):

- `"imagenet"`: keras.applications' own weights. Keras keeps them in
  `~/.keras/models` (or `$KERAS_HOME/models`) and downloads them when missing. Offline
  the download fails and we raise at once with a message that says how to pass a local
  file; every socket operation is bounded by `DOWNLOAD_SOCKET_TIMEOUT_S`, so a network
  that drops packets cannot make it hang either.
- a `.weights.h5` file written by `backbone.save_weights(...)` from a detseg backbone of
  the same name and width (what `detseg pretrain` writes).
- a keras.applications `*notop.h5` file (for example copied from a machine with
  internet into an offline one).

ImageNet and keras.applications files are loaded into a separately built reference
network, then copied layer by layer into the detseg backbone (whose structure does not
depend on where its weights came from). This matters for EfficientNet, whose
keras.applications build adds an extra rescaling layer only when `weights="imagenet"`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Callable

import keras

IMAGENET_WEIGHTS = "imagenet"
DOWNLOAD_SOCKET_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 3.0
# Where keras.applications downloads weights from.
IMAGENET_HOST = ("storage.googleapis.com", 443)
SAVED_WEIGHTS_SUFFIX = ".weights.h5"
APPLICATION_WEIGHTS_SUFFIXES = (".h5", ".hdf5")


class BackboneError(ValueError):
    """A backbone was asked for with a bad name, size or option; the message says which."""


class BackboneWeightsError(BackboneError):
    """Pretrained weights could not be found or do not fit; the message names the source."""


def keras_cache_dir() -> str:
    """Where keras.applications keeps downloaded weights."""
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def offline_help(name: str) -> str:
    return (f"Without internet, pass a local weights file instead: "
            f"`weights: /path/to/{name}.weights.h5` (written by `detseg pretrain`), "
            f"or a keras.applications '*notop.h5' file copied into {keras_cache_dir()}.")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Bounds every blocking socket call made by urllib (keras' downloader) meanwhile."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def imagenet_weights_cached(cache_prefix: str) -> bool:
    """True when the Keras cache holds a file that looks like this family's weights.

    Matching the file-name prefix only (keras.applications picks the exact file by
    width and size): a near miss just means keras is asked and fails or downloads.
    """
    cache = Path(keras_cache_dir())
    return cache.is_dir() and any(path.name.startswith(cache_prefix) and path.suffix == ".h5"
                                  for path in cache.iterdir())


def imagenet_host_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to keras.applications' download host opens in time."""
    try:
        with socket.create_connection(IMAGENET_HOST, timeout=timeout_s):
            return True
    except OSError:
        return False


def check_imagenet_available(name: str, cache_prefix: str) -> None:
    """Fails at once, before any model is built, when ImageNet weights cannot be had."""
    if not imagenet_weights_cached(cache_prefix) and not imagenet_host_reachable():
        raise BackboneWeightsError(
            f"backbone '{name}': ImageNet weights are not in {keras_cache_dir()} and "
            f"{IMAGENET_HOST[0]} cannot be reached (offline?). {offline_help(name)}")


def build_imagenet_reference(name: str, build_reference: Callable[[str], keras.Model]) -> keras.Model:
    """Calls `build_reference("imagenet")` (a keras.applications constructor), failing fast.

    Raises `BackboneWeightsError` with the offline instructions when the weights are
    neither cached nor downloadable.
    """
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            return build_reference(IMAGENET_WEIGHTS)
    except ValueError as error:  # keras rejects the request itself (e.g. an alpha it has no weights for)
        raise BackboneWeightsError(
            f"backbone '{name}': no ImageNet weights for this setting: {error}") from error
    except Exception as error:  # keras' downloader raises a bare Exception on network failure
        raise BackboneWeightsError(
            f"backbone '{name}': ImageNet weights are not in {keras_cache_dir()} and could not be "
            f"downloaded ({_first_line(error)}). {offline_help(name)}") from error


def build_file_reference(name: str, path: Path,
                         build_reference: Callable[[str], keras.Model]) -> keras.Model:
    """Calls `build_reference(path)` for a keras.applications `.h5` file, naming the file on error."""
    try:
        return build_reference(str(path))
    except Exception as error:
        raise BackboneWeightsError(
            f"weights file {path}: not keras.applications weights for backbone '{name}' "
            f"({_first_line(error)})") from error


def check_weights_path(name: str, weights: str | os.PathLike) -> Path:
    """The path of a local weights file, after checking it exists and has a known suffix."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone '{name}': weights file {path} does not exist (weights may be None, "
            f"'imagenet' or the path of a '{SAVED_WEIGHTS_SUFFIX}' or keras.applications '.h5' file)")
    if not (path.name.endswith(SAVED_WEIGHTS_SUFFIX) or path.suffix in APPLICATION_WEIGHTS_SUFFIXES):
        raise BackboneWeightsError(
            f"weights file {path}: unknown kind; expected a detseg backbone '{SAVED_WEIGHTS_SUFFIX}' "
            f"file (backbone.save_weights / detseg pretrain) or a keras.applications '.h5' file")
    return path


def is_saved_backbone_weights(path: Path) -> bool:
    """True for a Keras 3 `.weights.h5` file, False for a legacy keras.applications `.h5`."""
    return path.name.endswith(SAVED_WEIGHTS_SUFFIX)


def load_saved_backbone_weights(backbone: keras.Model, name: str, path: Path) -> None:
    """Loads a `.weights.h5` written by `save_weights` from a detseg backbone of the same kind."""
    try:
        backbone.load_weights(str(path))
    except Exception as error:
        raise BackboneWeightsError(
            f"weights file {path}: does not fit backbone '{name}' with this width "
            f"(was it saved from another backbone?): {_first_line(error)}") from error


def copy_network_weights(target: keras.Model, reference: keras.Model, source: str,
                         skip: Callable[[keras.layers.Layer], bool]) -> None:
    """Copies weights layer by layer, in order, from `reference` into `target`.

    Only layers that hold weights take part, minus those for which `skip(layer)` is
    true in either model (input normalization). Layer classes and weight shapes must
    agree pair by pair; `source` names the weights in the error otherwise.
    """
    targets = [layer for layer in target.layers if layer.weights and not skip(layer)]
    references = [layer for layer in reference.layers if layer.weights and not skip(layer)]
    if len(targets) != len(references):
        raise BackboneWeightsError(
            f"{source}: holds {len(references)} layers with weights, backbone "
            f"'{target.name}' has {len(targets)}")
    for mine, theirs in zip(targets, references):
        mine_shapes = [tuple(w.shape) for w in mine.weights]
        their_shapes = [tuple(w.shape) for w in theirs.weights]
        if type(mine) is not type(theirs) or mine_shapes != their_shapes:
            raise BackboneWeightsError(
                f"{source}: layer '{theirs.name}' {their_shapes} does not fit layer "
                f"'{mine.name}' {mine_shapes} of backbone '{target.name}'")
        mine.set_weights(theirs.get_weights())


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."
