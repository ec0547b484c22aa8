"""Predict workflow: an exported model (SavedModel or server) on image files -> records and drawings.

    predictions = predict_images(["a.jpg", "b.png"], "exports/shapes", out="preds/")
    predictions = predict_images(paths, server="http://127.0.0.1:8501", model_name="shapes")
    for p in predictions:
        p.record["detections"], p.json_path, p.png_path

The model runs through `serving.image_predictions` (`SavedModelImages` /
`ServedModelImages`: the `serving_default` signature, checked when the model is opened,
on the encoded files) and its per-image predictions in original pixels. Each image gets
a JSON-ready record: for detection, `{"task": "detection", "detections": [{box, score,
class, class_name[, mask (COCO RLE)]}]}`; for segmentation, `{"task": "segmentation",
label_names, pixels_per_class}`; for cls+loc, `{"task": "classification_localization",
class, class_name, score, box}`. With `out`, `<stem>.json` and `<stem>.png` (the image
with boxes, labels and masks drawn, or the class map) are written atomically.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from detseg.core.atomic_files import write_file_atomic, write_text_atomic
from detseg.core.contract import CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, SEMANTIC
from detseg.data.coco import encode_mask
from detseg.data.draw import draw_annotations, draw_semantic, save_png
from detseg.serving.image_predictions import (DEFAULT_BATCH_SIZE, SavedModelImages, ServedModelImages,
                                              predict_encoded)

Log = Callable[[str], None]
# The record's task names: what `detseg predict` has always written.
RECORD_TASKS = {DETECTION: "detection", INSTANCE: "detection", SEMANTIC: "segmentation",
                CLASSIFICATION_LOCALIZATION: "classification_localization"}


@dataclass
class ImagePrediction:
    """One image's prediction: the JSON-ready record, the decoded pixels and the written files."""

    path: Path
    record: dict[str, Any]
    prediction: dict[str, Any]  # `serving.image_predictions` form (numpy, original pixels)
    json_path: Path | None = None
    png_path: Path | None = None


def open_predictor(model: str | os.PathLike | None = None, *, server: str | None = None,
                   model_name: str | None = None, version: int | None = None):
    """A SavedModel (version folder or base path: latest version) or a served model, checked."""
    if (model is None) == (server is None):
        raise ValueError("give a SavedModel path or a server address (one of them)")
    if server is not None:
        return ServedModelImages(server, model_name, version)
    return SavedModelImages(model)


def predict_images(images: Sequence[str | os.PathLike], model: str | os.PathLike | None = None, *,
                   server: str | None = None, model_name: str | None = None, version: int | None = None,
                   out: str | os.PathLike | None = None, min_score: float = 0.0,
                   batch_size: int = DEFAULT_BATCH_SIZE, log: Log | None = None) -> list[ImagePrediction]:
    """Predict on `images` with `model` (a SavedModel) or `server` + `model_name`; see module doc.

    A file that is not a readable image is reported by name before the model is called.
    `min_score` drops weaker detections from the records and drawings.
    """
    return list(iter_predictions(images, model, server=server, model_name=model_name, version=version,
                                 out=out, min_score=min_score, batch_size=batch_size, log=log))


def iter_predictions(images: Sequence[str | os.PathLike], model: str | os.PathLike | None = None, *,
                     server: str | None = None, model_name: str | None = None, version: int | None = None,
                     out: str | os.PathLike | None = None, min_score: float = 0.0,
                     batch_size: int = DEFAULT_BATCH_SIZE, log: Log | None = None) -> Iterator[ImagePrediction]:
    """`predict_images`, one image at a time (bounded memory for many images)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    paths = [Path(p) for p in images]
    stems = output_stems(paths)
    predictor = None
    for start in range(0, len(paths), batch_size):
        chunk = list(range(start, min(start + batch_size, len(paths))))
        encoded = {index: read_image_file(paths[index]) for index in chunk}  # each file read once
        pixels = {index: decode_image(paths[index], encoded[index]) for index in chunk}
        if predictor is None:  # opened once the first images are known to be readable
            predictor = open_predictor(model, server=server, model_name=model_name, version=version)
        for index, prediction in predict_encoded(predictor, [(index, paths[index], encoded[index])
                                                             for index in chunk]):
            result = _image_prediction(paths[index], pixels.pop(index), prediction, min_score,
                                       None if out is None else Path(out), stems[index])
            if log is not None:
                log(summary_line(result))
            yield result


def read_image_file(path: Path) -> bytes:
    """The encoded bytes of an image file; a clear error naming one that cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read image ({e.strerror or e})") from None


def decode_image(path: Path, data: bytes | None = None) -> np.ndarray:
    """`uint8 [H, W, 3]` pixels of an image file (or of its bytes `data`); an error names a bad one."""
    if data is None:
        data = read_image_file(path)
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def output_stems(paths: Sequence[Path]) -> list[str]:
    """Output file stems: the image's own, numbered where two images share one."""
    stems = [p.stem for p in paths]
    return [f"{i:04d}_{s}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def task_record(prediction: dict[str, Any], min_score: float = 0.0) -> dict[str, Any]:
    """One image's prediction (`serving.image_predictions.row_prediction` form) as JSON-ready data."""
    if "class_map" in prediction:
        names = list(prediction["label_names"])
        class_map = prediction["class_map"]
        counts = np.bincount(class_map[class_map >= 0].ravel(), minlength=len(names))
        return {"task": RECORD_TASKS[SEMANTIC], "label_names": names,
                "pixels_per_class": {names[i] if i < len(names) else str(i): int(c) for i, c in enumerate(counts)}}
    if "box" in prediction:
        return {"task": RECORD_TASKS[CLASSIFICATION_LOCALIZATION], "class": int(prediction["class"]),
                "class_name": prediction["class_name"], "score": round(float(prediction["score"]), 5),
                "box": [round(float(v), 3) for v in prediction["box"]]}
    detections = []
    for k in kept_detections(prediction, min_score):
        item = {"box": [round(float(v), 3) for v in prediction["boxes"][k]],
                "score": round(float(prediction["scores"][k]), 5),
                "class": int(prediction["classes"][k]), "class_name": prediction["class_names"][k]}
        if "masks" in prediction:
            item["mask"] = encode_mask(prediction["masks"][k])
        detections.append(item)
    return {"task": RECORD_TASKS[DETECTION], "detections": detections}


def kept_detections(prediction: dict[str, Any], min_score: float) -> list[int]:
    """Indices of the detections scoring at least `min_score`."""
    return [k for k in range(int(prediction["num_detections"])) if float(prediction["scores"][k]) >= min_score]


def draw_prediction(image: np.ndarray, prediction: dict[str, Any], min_score: float = 0.0) -> np.ndarray:
    """`image` with the prediction drawn: boxes, labels and masks, or the coloured class map."""
    if "class_map" in prediction:
        return draw_semantic(image, prediction["class_map"], len(prediction["label_names"]))
    if "box" in prediction:
        return draw_annotations(image, np.asarray(prediction["box"], np.float32).reshape(1, 4),
                                [prediction["class_name"]], [float(prediction["score"])],
                                class_ids=[int(prediction["class"])])
    kept = kept_detections(prediction, min_score)
    masks = prediction["masks"][kept] if "masks" in prediction and kept else None
    return draw_annotations(image, np.asarray(prediction["boxes"], np.float32)[kept].reshape(-1, 4),
                            [prediction["class_names"][k] for k in kept],
                            [float(prediction["scores"][k]) for k in kept], masks=masks,
                            class_ids=[int(prediction["classes"][k]) for k in kept])


def summary_line(result: ImagePrediction) -> str:
    """`a.jpg -> preds/a.json (3 detections)`: what one image gave."""
    target = result.json_path or result.path
    found = f" ({len(result.record['detections'])} detections)" if "detections" in result.record else ""
    return f"{result.path} -> {target}{found}"


def _image_prediction(path: Path, image: np.ndarray, prediction: dict[str, Any], min_score: float,
                      out: Path | None, stem: str) -> ImagePrediction:
    record = {"image": str(path), "height": int(image.shape[0]), "width": int(image.shape[1]),
              **task_record(prediction, min_score)}
    result = ImagePrediction(path, record, prediction)
    if out is not None:
        result.json_path = write_text_atomic(json.dumps(record, indent=1), out / f"{stem}.json")
        drawing = draw_prediction(image, prediction, min_score)
        result.png_path = write_file_atomic(out / f"{stem}.png", lambda temporary: save_png(drawing, temporary))
    return result
