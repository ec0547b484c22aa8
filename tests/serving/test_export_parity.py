"""Export parity for every model family: the reloaded SavedModel serves what the model predicts.

Each family of `training.families.FAMILIES` is built as its smoke config builds it (tiny
backbone, 64 px, random weights: predictions are deterministic, so no training is
needed), wrapped by the users' export path (`serving.serving_module.serving_module_for`, which
`detseg.workflows.export.export_run` uses),
written by `serving.export.export_saved_model`, and reloaded with `tf.saved_model.load`.
Both signatures (`serving_default`: encoded PNGs; `serving_pixels`: uint8 pixels) must
then give, on the same images, what the in-memory model gives through the pipeline's
letterbox (`pipelines.letterbox`, the numpy/OpenCV twin of `models.ops.letterbox`) and
`training.predictions.frame_to_original` (the path `detseg evaluate` takes on a run
directory; it maps back with the graph's own `models.ops.letterbox` functions, so dense
outputs differ only where the model's own outputs differ by float rounding):

- detection (yolo, ssd, faster_rcnn, mask_rcnn): the same number of detections (> 0),
  each matched to one of the model's with the same class, box within 1e-3 px, score
  within 1e-5; mask_rcnn's masks equal but for pixels at the 0.5 threshold.
- segmentation (fcn, unet): the same class map but for a tiny fraction of pixels at ties.
- cls+loc: the same class, score and box.

Images: 64 x 64 (the letterbox is the identity), 40 x 64 (scale 1, only padding) and
96 x 48 (scale 2/3: resampled by TF in the graph and by OpenCV in the reference, see
`SCALED`). Kernels are redrawn so the untrained predictions vary (`spread_weights`).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from detseg.models.backbones.registry import feature_shape
from detseg.core.contract import CLASSIFICATION_LOCALIZATION, PAD_CLASS, SEMANTIC
from detseg.pipelines.letterbox import letterbox_image, letterbox_params
from detseg.serving.export import export_saved_model
from detseg.serving.serving_module import DEFAULT_SIGNATURE, PIXELS_SIGNATURE, serving_module_for
from detseg.serving.task_outputs import TASKS as SERVING_TASKS
from detseg.training.config import load_config
from detseg.training.families import FAMILIES
from detseg.training.predictions import frame_to_original
from detseg.training.transfer_stages import build_backbone_for

pytestmark = pytest.mark.slow  # one export per family: ~55 s for the file on 2 cores

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIGS = REPO / "configs" / "smoke"
CLASS_NAMES = ["circle", "rectangle", "triangle"]  # the synthetic shapes of the smoke configs
SIZE = 64  # every smoke config's model.image_size
FRAME_SHAPES = [(SIZE, SIZE), (SIZE, SIZE), (40, SIZE)]  # letterbox: identity, identity, padding only
SCALED_SHAPE = (96, 48)  # letterbox: scale 2/3, resized to 64 x 32, padded left and right


@dataclasses.dataclass(frozen=True)
class Tolerance:
    box_px: float  # original pixels
    score: float
    dense_fraction: float  # mask / class-map pixels that may differ


# Resampling-free images: the only differences are float rounding of identical ops.
EXACT = Tolerance(box_px=1e-3, score=1e-5, dense_fraction=1e-3)
# A 2/3 resize: the graph resizes with tf.image.resize, the reference with OpenCV. Fed
# float32 pixels (not uint8, which OpenCV would round to whole grey levels: 0.7 apart),
# both are bilinear with half-pixel centres and agree to ~5e-4 of a grey level (exactly at
# 2/3 here), so the model's frame outputs are as close as in the exact case; boxes are
# then divided by the scale, which stretches their rounding by 1.5.
SCALED = Tolerance(box_px=1.5e-3, score=1e-5, dense_fraction=1e-3)


class Exported(NamedTuple):
    family: str
    task: str  # the family's task (`training.model_family.ModelFamily.task`), also the served one
    model: keras.Model
    loaded: Any  # what tf.saved_model.load returned


def _overrides(family: str) -> list[str]:
    """A zero score threshold where the head has one, so untrained detectors still detect."""
    head_fields = {f.name for f in dataclasses.fields(FAMILIES[family].head_config)}
    return ["model.head.score_threshold=0.0"] if "score_threshold" in head_fields else []


def build_family_model(family: str) -> keras.Model:
    """The family's stage-2 task model (backbone + head) as its smoke config describes it."""
    config = load_config(SMOKE_CONFIGS / f"{family}.yaml", _overrides(family))
    assert config.model.family == family and config.model.image_size == SIZE
    spec = FAMILIES[family]
    backbone = build_backbone_for(config)
    keras.utils.set_random_seed(config.seed + 1)
    shapes = {level: feature_shape(backbone, level) for level in spec.bottleneck_levels}
    head = spec.build_head(shapes, len(CLASS_NAMES), config.model.head)
    model = spec.build_model(backbone, head, config.model.head, SIZE)
    spread_weights(model, config.seed)
    return model


def spread_weights(model: keras.Model, seed: int) -> None:
    """Redraw every kernel He-normal, so an untrained model's predictions depend on its image.

    As built, the image's signal fades through the random layers (Glorot kernels behind
    ReLUs): every image gets the same class and a point box, every score is within ~1e-5
    of the others (YOLO 0.01, Faster R-CNN 0.25), and a 1e-5 score tolerance could not
    tell swapped detections apart. He-normal kernels keep the signal alive to the outputs;
    biases (the heads' priors) and batch-norm parameters stay as built.
    """
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():  # every nested layer, each once
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        shape = tuple(kernel.shape)
        # A depthwise kernel [kh, kw, channels, multiplier] sees kh * kw inputs per output.
        fan_in = np.prod(shape[:2]) if isinstance(layer, keras.layers.DepthwiseConv2D) else np.prod(shape[:-1])
        kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, tmp_path_factory) -> Exported:
    family = request.param
    task = FAMILIES[family].task
    model = build_family_model(family)
    module = serving_module_for(model, task, SIZE, CLASS_NAMES)
    base = tmp_path_factory.mktemp(f"export_{family}") / family
    version = export_saved_model(module, base, model_name=family)
    assert version == base / "1" and (version / "saved_model.pb").is_file()
    return Exported(family, task, model, tf.saved_model.load(str(version)))


# ---------------------------------------------------------------------------- images


def shapes_image(height: int, width: int, seed: int) -> np.ndarray:
    """`uint8 [height, width, 3]`: noise on a grey ground with a few flat rectangles (some structure)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 25, (height, width, 3))
    for _ in range(3):
        x0, y0 = rng.integers(0, width - 8), rng.integers(0, height - 8)
        x1, y1 = rng.integers(x0 + 6, width + 1), rng.integers(y0 + 6, height + 1)
        image[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the two sides


def in_memory_predictions(model: keras.Model, task: str, images: list[np.ndarray]) -> list[dict]:
    """Per-image predictions in original pixels: numpy letterbox, `model.predict_step`, numpy inverse.

    The letterbox is applied to float32 pixels, so OpenCV does not round the resized image
    to whole grey levels as it would for uint8 (the graph resizes in float32).
    """
    transforms = [letterbox_params(*image.shape[:2], SIZE) for image in images]
    framed = np.stack([letterbox_image(image.astype(np.float32), t, SIZE) for image, t in zip(images, transforms)])
    outputs = {name: np.asarray(value) for name, value in model.predict_step(tf.constant(framed)).items()}
    return [frame_to_original(task, outputs, row, t.as_array()) for row, t in enumerate(transforms)]


def served_rows(outputs: dict[str, tf.Tensor]) -> list[dict[str, np.ndarray]]:
    """A signature's batched outputs -> one dict per image, dense maps cropped to the image."""
    outputs = {name: value.numpy() for name, value in outputs.items()}
    rows = []
    for i in range(len(next(iter(outputs.values())))):
        row = {name: value[i] for name, value in outputs.items()}
        if "image_height" in row:
            h, w = int(row["image_height"]), int(row["image_width"])
            for dense in ("class_map", "masks"):
                if dense in row:
                    row[dense] = row[dense][..., :h, :w]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- comparisons


def assert_same_detections(served: dict, expected: dict, with_masks: bool, tol: Tolerance) -> None:
    """Served detections equal the model's, matched one to one (NMS order may differ at ties)."""
    count = int(served["num_detections"])
    assert count == len(expected["scores"]) > 0, "the comparison needs detections on both sides"
    boxes, scores, classes = served["boxes"][:count], served["scores"][:count], served["classes"][:count]
    assert [n.decode() for n in served["class_names"][:count]] == [CLASS_NAMES[c] for c in classes]
    assert np.all(served["classes"][count:] == PAD_CLASS) and not served["scores"][count:].any()
    assert not with_masks or expected["masks"].any(), "the comparison needs non-empty masks"
    unmatched = set(range(count))
    for k in range(count):
        candidates = [j for j in unmatched if classes[j] == expected["classes"][k]
                      and abs(scores[j] - expected["scores"][k]) <= tol.score]
        errors = [np.abs(boxes[j] - expected["boxes"][k]).max() for j in candidates]
        assert candidates and min(errors) <= tol.box_px, (
            f"model detection {k} (class {expected['classes'][k]}, score {expected['scores'][k]:.6f}, "
            f"box {expected['boxes'][k]}) has no served match; closest box error "
            f"{min(errors) if errors else None}")
        j = candidates[int(np.argmin(errors))]
        unmatched.discard(j)
        if with_masks:
            assert served["masks"][j].shape == expected["masks"][k].shape
            # Only pixels whose mask probability is within float rounding of 0.5 may differ.
            assert np.mean(served["masks"][j] != expected["masks"][k]) <= tol.dense_fraction


def assert_same_prediction(task: str, served: dict, expected: dict, tol: Tolerance) -> None:
    if task == SEMANTIC:
        assert served["class_map"].shape == expected["class_map"].shape
        assert len(np.unique(expected["class_map"])) > 1, "the comparison needs more than one class"
        assert [n.decode() for n in served["label_names"]] == ["background", *CLASS_NAMES]
        # Bilinear resampling then argmax: pixels at (near-)ties of two classes may flip.
        assert np.mean(served["class_map"] != expected["class_map"]) <= tol.dense_fraction
    elif task == CLASSIFICATION_LOCALIZATION:
        assert int(served["class"]) == expected["class"]
        assert served["class_name"].decode() == CLASS_NAMES[expected["class"]]
        assert abs(float(served["score"]) - expected["score"]) <= tol.score
        np.testing.assert_allclose(served["box"], expected["box"], atol=tol.box_px)
    else:
        assert_same_detections(served, expected, "masks" in expected, tol)


def assert_signature_matches(exported: Exported, signature: str, images: list[np.ndarray],
                             tolerances: list[Tolerance]) -> None:
    fn = exported.loaded.signatures[signature]
    if signature == DEFAULT_SIGNATURE:
        outputs = fn(images=tf.constant([png(image) for image in images]))
    else:
        outputs = fn(pixels=tf.constant(np.stack(images)))
    expected = in_memory_predictions(exported.model, exported.task, images)
    rows = served_rows(outputs)
    assert len(rows) == len(images)
    for index, (row, truth, tol) in enumerate(zip(rows, expected, tolerances)):
        try:
            assert_same_prediction(exported.task, row, truth, tol)
        except AssertionError as error:
            raise AssertionError(f"{exported.family}, {signature}, image {index} "
                                 f"{images[index].shape[:2]}: {error}") from None


# ---------------------------------------------------------------------------- tests


def test_every_family_is_covered():
    """A family added to FAMILIES is exported here too (the fixture is parametrized by it)."""
    assert set(FAMILIES) == {"clsloc", "fcn", "unet", "yolo", "ssd", "faster_rcnn", "mask_rcnn"}
    assert {FAMILIES[f].task for f in FAMILIES} <= set(SERVING_TASKS)


def test_encoded_images_match_the_model(exported):
    """`serving_default`, one mixed-size batch: two frame-size PNGs, a padded one, a scaled one."""
    images = [shapes_image(h, w, seed) for seed, (h, w) in enumerate([*FRAME_SHAPES, SCALED_SHAPE])]
    assert_signature_matches(exported, DEFAULT_SIGNATURE, images, [EXACT] * len(FRAME_SHAPES) + [SCALED])


def test_frame_size_pixels_match_the_model(exported):
    images = [shapes_image(SIZE, SIZE, seed) for seed in (10, 11)]
    assert_signature_matches(exported, PIXELS_SIGNATURE, images, [EXACT, EXACT])


def test_scaled_pixels_match_the_model(exported):
    images = [shapes_image(*SCALED_SHAPE, seed) for seed in (20, 21)]
    assert_signature_matches(exported, PIXELS_SIGNATURE, images, [SCALED, SCALED])
