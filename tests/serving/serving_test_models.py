"""Tiny models and helpers for the serving tests (imported by conftest.py and the tests).

`build_detection_model` is a real Keras model (convolutions, dense heads, seeded
weights) whose outputs follow the detection contract of `serving.task_outputs`: boxes
near fixed anchors in the 64 px letterbox frame, sigmoid scores, argmax classes, a
constant `num_detections` of K - 1 (so one slot is always padding) and frame masks at
stride 4 that fill each box. `counting_instance_model` is a weightless instance `infer`
whose detection count depends on the image (none in a dark one).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from detseg.serving.model_config import ModelEntry
from detseg.serving.server import ModelServer, ServerOptions

FRAME = 64
NUM_CLASSES = 2
LABELS = ["circle", "square"]
MAX_DETECTIONS = 4
MASK_STRIDE = 4
ANCHORS = np.array([[4, 4, 28, 30], [30, 10, 60, 44], [10, 34, 40, 60], [0, 0, 64, 64]], np.float32)
MODEL_NAME = "tiny"
SERVER_LIFETIME_S = 300  # a server a test forgot to stop dies by itself


def _dense(units: int, seed: int, activation: str | None = None) -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                              bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1))


def _frame_masks(boxes):
    """`[B, K, 4]` frame boxes -> `[B, K, FRAME/4, FRAME/4]` 1 where a cell centre is inside the box."""
    ops = keras.ops
    centres = (ops.arange(FRAME // MASK_STRIDE, dtype="float32") + 0.5) * MASK_STRIDE
    x_in = (centres[None, None, :] >= boxes[..., 0:1]) & (centres[None, None, :] <= boxes[..., 2:3])
    y_in = (centres[None, None, :] >= boxes[..., 1:2]) & (centres[None, None, :] <= boxes[..., 3:4])
    return ops.cast(y_in[..., :, None] & x_in[..., None, :], "float32")


def build_detection_model(seed: int = 0, with_masks: bool = True) -> keras.Model:
    """`float32 [B, 64, 64, 3]` pixels -> detection dict in the letterbox frame (see module doc)."""
    ops = keras.ops
    pixels = keras.Input((FRAME, FRAME, 3))
    x = keras.layers.Rescaling(1 / 255.0)(pixels)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                kernel_initializer=keras.initializers.HeNormal(seed=seed + filters))(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    offsets = keras.layers.Reshape((MAX_DETECTIONS, 4))(_dense(MAX_DETECTIONS * 4, seed + 3, "tanh")(features))
    boxes = keras.layers.Lambda(lambda o: ops.convert_to_tensor(ANCHORS)[None] + 4.0 * o)(offsets)
    scores = _dense(MAX_DETECTIONS, seed + 5, "sigmoid")(features)
    class_logits = keras.layers.Reshape((MAX_DETECTIONS, NUM_CLASSES))(_dense(MAX_DETECTIONS * NUM_CLASSES, seed + 7)(features))
    classes = keras.layers.Lambda(lambda t: ops.cast(ops.argmax(t, axis=-1), "int32"))(class_logits)
    num_detections = keras.layers.Lambda(
        lambda t: ops.full((ops.shape(t)[0],), MAX_DETECTIONS - 1, dtype="int32"))(features)
    outputs = {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": num_detections}
    if with_masks:
        outputs["masks"] = keras.layers.Lambda(_frame_masks)(boxes)
    return keras.Model(pixels, outputs, name=f"tiny_detector_{seed}")


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def random_pixels(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random RGB pixels (JPEG-friendly): a coarse random grid scaled up."""
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def copy_base_path(exported: Path, destination: Path) -> Path:
    """A private copy of a base path (tests that add versions must not touch the shared one)."""
    shutil.copytree(exported, destination)
    return destination


def start_server(base_path: Path, **options) -> ModelServer:
    settings = dict(port=0, rest_api_port=0, poll_interval_s=0.2, max_lifetime_s=SERVER_LIFETIME_S)
    settings.update(options)
    return ModelServer([ModelEntry(MODEL_NAME, base_path)], ServerOptions(**settings)).start()


def counting_instance_model(pixels):
    """A weightless instance `infer`: four slots, each with a full-frame mask (padding slots
    too); 3 detections in a bright image, none in a dark one."""
    batch = tf.shape(pixels)[0]
    counts = tf.where(tf.reduce_max(pixels, axis=[1, 2, 3]) > 128.0, 3, 0)
    return {"boxes": tf.tile(tf.constant([[[0.0, 0.0, FRAME, FRAME]]]), [batch, MAX_DETECTIONS, 1]),
            "scores": tf.fill([batch, MAX_DETECTIONS], 0.9), "classes": tf.zeros([batch, MAX_DETECTIONS], tf.int32),
            "num_detections": counts, "masks": tf.ones([batch, MAX_DETECTIONS, FRAME, FRAME])}
