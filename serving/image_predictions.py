"""Per-image predictions of an EXPORTED model on image files: a SavedModel folder or a served model.

    predict = SavedModelImages("exports/shapes")            # latest version, in process
    predict = ServedModelImages("http://127.0.0.1:8501", "shapes")   # over TF Serving's API
    for image_id, prediction in image_predictions(predict, [(7, Path("a.png")), ...]):
        ...

Both run the `serving_default` signature on the encoded files, exactly as a user's client
would, so what gets evaluated is the exported graph (decoding, letterbox, model, mapping
back) and, for a served model, the server and the wire format too. Each row of the
signature's outputs becomes one image's prediction, in the contract that
`evaluation.task_evaluation` takes, per task (`detseg.core.contract` task names):

- "detection" / "instance" (masks): `boxes` `[N, 4]` xyxy original px, `scores`, `classes`,
  `class_names` (str), `num_detections`; `masks` `uint8 [N, H, W]` cut to the image's size.
- "semantic": `class_map` `int32 [H, W]` (cut to the image's size), `label_names`.
- "classification_localization": `class`, `score`, `box` `[4]`, `class_name`.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import tensorflow as tf

from detseg.core.contract import CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, SEMANTIC
from detseg.serving.client import IMAGES_SIGNATURE, ServingClient, ServingClientError
from detseg.serving.export import load_saved_model, numeric_versions

DEFAULT_BATCH_SIZE = 8  # images per call: bounded memory and request size

EncodedPredict = Callable[[list[bytes]], Mapping[str, np.ndarray]]


class ImagePredictionError(ValueError):
    """No predictions can be had: not a SavedModel, server unreachable, unknown model, bad image."""


def task_of_outputs(output_names: Iterable[str]) -> str:
    """The task a `serving_default` signature serves, from its output names."""
    names = set(output_names)
    if "boxes" in names:
        return INSTANCE if "masks" in names else DETECTION
    if "class_map" in names:
        return SEMANTIC
    if "box" in names:
        return CLASSIFICATION_LOCALIZATION
    raise ImagePredictionError(f"the signature's outputs {sorted(names)} are not a detseg task's "
                               f"(boxes, class_map or box)")


def saved_model_version_dir(path: str | os.PathLike) -> Path:
    """`path` if it holds `saved_model.pb`, else its highest numbered version folder."""
    path = Path(path)
    if not path.exists():
        raise ImagePredictionError(f"{path}: no such file or folder")
    if (path / "saved_model.pb").is_file():
        return path
    versions = numeric_versions(path)
    if not versions or not (path / str(versions[-1]) / "saved_model.pb").is_file():
        raise ImagePredictionError(f"{path}: not a SavedModel (no saved_model.pb) nor a base path with "
                                   f"numbered version folders")
    return path / str(versions[-1])


class SavedModelImages:
    """Calls a SavedModel's `serving_default` in process: `list[bytes] -> outputs` (numpy)."""

    def __init__(self, path: str | os.PathLike):
        self.path = saved_model_version_dir(path)
        try:
            loaded = load_saved_model(self.path)
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise ImagePredictionError(f"{self.path}: cannot load the SavedModel ({_first_line(error)})") from None
        if IMAGES_SIGNATURE not in loaded.signatures:
            raise ImagePredictionError(f"{self.path}: the SavedModel has no '{IMAGES_SIGNATURE}' signature "
                                       f"(it has {sorted(loaded.signatures)})")
        self._loaded = loaded  # keeps the signature's variables alive
        self._signature = loaded.signatures[IMAGES_SIGNATURE]
        self.output_names = sorted(self._signature.structured_outputs)
        self.description = str(self.path)

    def __call__(self, encoded: list[bytes]) -> dict[str, np.ndarray]:
        outputs = self._signature(images=tf.constant(encoded, tf.string))
        return {name: value.numpy() for name, value in outputs.items()}


class ServedModelImages:
    """Calls a model served over TF Serving's REST (or gRPC) API: `list[bytes] -> outputs`."""

    def __init__(self, address: str, model_name: str, version: int | None = None, timeout_s: float = 120.0):
        if not model_name:
            raise ImagePredictionError("a served model needs its name (--model-name)")
        self.client = ServingClient(address, model_name, version, timeout_s)
        self.description = f"{address} model {model_name}" + (f" version {version}" if version else "")
        signatures = self._call(self.client.metadata)["metadata"]["signature_def"]["signature_def"]
        if IMAGES_SIGNATURE not in signatures:
            raise ImagePredictionError(f"{self.description}: no '{IMAGES_SIGNATURE}' signature "
                                       f"(it has {sorted(signatures)})")
        self.output_names = sorted(signatures[IMAGES_SIGNATURE]["outputs"])

    def _call(self, method: Callable, *args) -> Any:
        try:
            return method(*args)
        except ServingClientError as error:
            if error.status == "UNAVAILABLE":  # gRPC's word for a connection that failed
                raise ImagePredictionError(f"{self.description}: server unreachable ({error.message})") from None
            raise ImagePredictionError(f"{self.description}: the server answered {error}") from None
        except (OSError, http.client.HTTPException) as error:  # refused, reset, no such host, timeout
            raise ImagePredictionError(f"{self.description}: server unreachable ({error})") from None
        except json.JSONDecodeError:
            raise ImagePredictionError(f"{self.description}: the answer is not JSON: is this a TF Serving "
                                       f"REST address?") from None

    def __call__(self, encoded: list[bytes]) -> dict[str, np.ndarray]:
        return self._call(self.client.predict, encoded)

    def close(self) -> None:
        self.client.close()


def image_predictions(predict: EncodedPredict, images: Iterable[tuple[int, Path]],
                      batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(image_id, prediction)` for each `(image_id, image file)`, `batch_size` files per call."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    pending: list[tuple[int, Path, bytes]] = []
    for image_id, path in images:
        pending.append((int(image_id), Path(path), _read(Path(path))))
        if len(pending) == batch_size:
            yield from predict_encoded(predict, pending)
            pending = []
    if pending:
        yield from predict_encoded(predict, pending)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ImagePredictionError(f"{path}: cannot read the image ({error.strerror or error})") from None


def predict_encoded(predict: EncodedPredict,
                    chunk: list[tuple[int, Path, bytes]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(image_id, prediction)` for each `(image_id, path, encoded bytes)` of one call's chunk."""
    try:
        outputs = predict([data for _, _, data in chunk])
    except tf.errors.InvalidArgumentError as error:
        files = ", ".join(str(path) for _, path, _ in chunk)
        raise ImagePredictionError(f"the model could not read one of {files} ({_first_line(error)})") from None
    task = task_of_outputs(outputs)
    for row, (image_id, _, _) in enumerate(chunk):
        yield image_id, row_prediction(task, outputs, row)


def row_prediction(task: str, outputs: Mapping[str, np.ndarray], row: int) -> dict[str, Any]:
    """One image's prediction (module docstring) from row `row` of the signature's outputs."""
    if task == CLASSIFICATION_LOCALIZATION:
        return {"class": int(outputs["class"][row]), "score": float(outputs["score"][row]),
                "box": np.asarray(outputs["box"][row], np.float32), "class_name": _text(outputs["class_name"][row])}
    if task == SEMANTIC:
        height, width = int(outputs["image_height"][row]), int(outputs["image_width"][row])
        return {"class_map": np.asarray(outputs["class_map"][row][:height, :width], np.int32),
                "label_names": [_text(name) for name in outputs["label_names"][row]]}
    count = int(outputs["num_detections"][row])
    prediction = {"boxes": np.asarray(outputs["boxes"][row, :count], np.float32),
                  "scores": np.asarray(outputs["scores"][row, :count], np.float32),
                  "classes": np.asarray(outputs["classes"][row, :count], np.int64),
                  "class_names": [_text(name) for name in outputs["class_names"][row, :count]],
                  "num_detections": count}
    if task == INSTANCE:
        height, width = int(outputs["image_height"][row]), int(outputs["image_width"][row])
        # A batch without detections has no mask rows; over JSON they arrive as `[]`.
        masks = outputs["masks"][row] if count else np.zeros((0, height, width), np.uint8)
        prediction["masks"] = np.asarray(masks, np.uint8)[:count, :height, :width]
    return prediction


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
