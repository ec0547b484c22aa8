"""`detseg predict`: run an exported model on image files, locally or through a server.

    detseg predict a.jpg b.png --model exports/shapes/3 --out preds/
    detseg predict a.jpg --server http://127.0.0.1:8501 --model-name shapes --out preds/

For each image it writes `<stem>.json` (what the model found, boxes in original pixels,
instance masks as COCO RLE) and `<stem>.png` (the image with boxes, labels and masks
drawn, or the class map for segmentation). The task is read from the signature's outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

CHUNK_SIZE = 8  # images per request: bounded memory and request size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict on images with a SavedModel or a TF Serving server")
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG/JPEG/BMP/GIF)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a SavedModel version folder, or a base path (latest version)")
    source.add_argument("--server", help="server address: http://host:8501 (REST) or grpc://host:8500")
    p.add_argument("--model-name", dest="model_name", help="model name on the server (with --server)")
    p.add_argument("--version", type=int, default=None, help="model version on the server (default: latest)")
    p.add_argument("--out", type=Path, required=True, help="folder for <stem>.json and <stem>.png")
    p.add_argument("--min-score", dest="min_score", type=float, default=0.0,
                   help="drop detections scoring below this")
    p.set_defaults(func=_predict)


def _local_predictor(model: Path) -> Callable[[list[bytes]], dict[str, np.ndarray]]:
    import tensorflow as tf

    from detseg.serving.export import numeric_versions

    if not (model / "saved_model.pb").is_file():
        versions = numeric_versions(model)
        if not versions:
            raise FileNotFoundError(f"--model {model}: neither a SavedModel folder nor a base path with versions")
        model = model / str(versions[-1])
    signature = tf.saved_model.load(str(model)).signatures["serving_default"]
    return lambda encoded: {k: v.numpy() for k, v in signature(images=tf.constant(encoded)).items()}


def _remote_predictor(url: str, model_name: str | None, version: int | None) -> Callable:
    from detseg.serving.client import ServingClient

    if not model_name:
        raise ValueError("--server needs --model-name")
    client = ServingClient(url, model_name, version)
    return client.predict


def _read_images(paths: list[Path]) -> list[bytes]:
    encoded = []
    for path in paths:
        try:
            encoded.append(path.read_bytes())
        except OSError as e:
            raise FileNotFoundError(f"{path}: cannot read image ({e.strerror or e})") from None
    return encoded


def _decode(encoded: bytes, path: Path) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def detection_record(outputs: dict[str, np.ndarray], row: int, min_score: float) -> dict[str, Any]:
    """One image's detections as JSON-ready dicts (masks as COCO RLE)."""
    from detseg.data.coco import encode_mask

    count = int(outputs["num_detections"][row])
    height, width = _row_size(outputs, row)
    detections = []
    for k in range(count):
        score = float(outputs["scores"][row, k])
        if score < min_score:
            continue
        item = {"box": [round(float(v), 3) for v in outputs["boxes"][row, k]], "score": round(score, 5),
                "class": int(outputs["classes"][row, k]), "class_name": _text(outputs["class_names"][row, k])}
        if "masks" in outputs:
            item["mask"] = encode_mask(outputs["masks"][row, k][:height, :width])
        detections.append(item)
    return {"task": "detection", "detections": detections}


def _row_size(outputs: dict[str, np.ndarray], row: int) -> tuple[int | None, int | None]:
    if "image_height" in outputs:
        return int(outputs["image_height"][row]), int(outputs["image_width"][row])
    return None, None


def _draw(image: np.ndarray, record: dict[str, Any], outputs: dict[str, np.ndarray], row: int) -> np.ndarray:
    from detseg.data.coco import decode_segmentation
    from detseg.data.draw import draw_annotations, draw_semantic

    height, width = image.shape[:2]
    if record["task"] == "segmentation":
        class_map = outputs["class_map"][row][:height, :width]
        return draw_semantic(image, class_map, len(record["label_names"]))
    items = record["detections"] if record["task"] == "detection" else [record]
    boxes = np.array([d["box"] for d in items], np.float32).reshape(-1, 4)
    masks = None
    if items and all("mask" in d for d in items):
        masks = np.stack([decode_segmentation(d["mask"], height, width) for d in items])
    return draw_annotations(image, boxes, [d["class_name"] for d in items], [d["score"] for d in items],
                            masks=masks, class_ids=[d["class"] for d in items])


def image_record(outputs: dict[str, np.ndarray], row: int, min_score: float) -> dict[str, Any]:
    """One image's outputs -> its JSON record; the task follows the output names."""
    if "boxes" in outputs:
        return detection_record(outputs, row, min_score)
    if "class_map" in outputs:
        class_map = outputs["class_map"][row][:int(outputs["image_height"][row]), :int(outputs["image_width"][row])]
        names = [_text(n) for n in outputs["label_names"][row]]
        counts = np.bincount(class_map[class_map >= 0].ravel(), minlength=len(names))
        return {"task": "segmentation", "label_names": names,
                "pixels_per_class": {names[i] if i < len(names) else str(i): int(c) for i, c in enumerate(counts)}}
    if "box" in outputs:
        return {"task": "classification_localization", "class": int(outputs["class"][row]),
                "class_name": _text(outputs["class_name"][row]), "score": round(float(outputs["score"][row]), 5),
                "box": [round(float(v), 3) for v in outputs["box"][row]]}
    raise ValueError(f"the model's outputs {sorted(outputs)} are not a detseg task's (boxes, class_map or box)")


def _output_stems(paths: list[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return [f"{i:04d}_{s}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def _predict(args: argparse.Namespace) -> int:
    from detseg.data.draw import save_png

    predict = _local_predictor(args.model) if args.model else _remote_predictor(args.server, args.model_name,
                                                                                args.version)
    encoded = _read_images(args.images)
    stems = _output_stems(args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(encoded), CHUNK_SIZE):
        chunk = encoded[start:start + CHUNK_SIZE]
        # Decode here first: a broken file is reported by name, before the model sees it.
        images = [_decode(data, args.images[start + row]) for row, data in enumerate(chunk)]
        outputs = predict(chunk)
        for row, image in enumerate(images):
            path, stem = args.images[start + row], stems[start + row]
            record = {"image": str(path), "height": int(image.shape[0]), "width": int(image.shape[1]),
                      **image_record(outputs, row, args.min_score)}
            (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
            save_png(_draw(image, record, outputs, row), args.out / f"{stem}.png")
            summary = f" ({len(record['detections'])} detections)" if record["task"] == "detection" else ""
            print(f"{path} -> {args.out / stem}.json{summary}")
    return 0
