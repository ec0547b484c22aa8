"""Faster R-CNN: prediction contract, empty-image losses, features-only model, save/load, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.core.contract import PAD_CLASS
from detseg.models.backbones.registry import build_backbone
from detseg.models.rcnn.faster_rcnn import FasterRCNN, build_faster_rcnn
from detseg.models.rcnn.box_head import BoxHead
from detseg.models.necks.fpn import FeaturePyramid
from detseg.models.rcnn.options import TwoStageConfigError, TwoStageOptions
from detseg.models.rcnn.rpn_head import RPNHead

SIZE = 64
LEVELS = ("P3", "P4")
SMALL_OPTIONS = {
    "anchor_sizes": (16.0, 32.0), "anchor_scales": (1.0,), "anchor_ratios": (0.5, 1.0, 2.0),
    "rpn_samples": 64,
    "train_proposals": {"pre_nms_top_k": 100, "post_nms_top_k": 48, "nms_iou": 0.7, "min_size": 1.0},
    "test_proposals": {"pre_nms_top_k": 100, "post_nms_top_k": 32, "nms_iou": 0.7, "min_size": 1.0},
    "rois_per_image": 32, "masks_per_image": 8,
    "nms": {"iou_threshold": 0.5, "score_threshold": 0.0, "max_detections": 10},
}


def small_model(builder=build_faster_rcnn, **extra):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    return builder(backbone, 3, levels=LEVELS, fpn_channels=16, box_head_units=32,
                   options=SMALL_OPTIONS, **extra)


def targets(with_masks: bool = False, empty: bool = False) -> dict:
    """Two images: image 0 with a class-0 and a class-2 object, image 1 empty (padding rows)."""
    boxes = np.full((2, 4, 4), -1.0, np.float32)
    classes = np.full((2, 4), -1, np.int32)
    masks = np.zeros((2, 4, SIZE, SIZE), np.uint8)
    if not empty:
        boxes[0, :2] = [[4, 6, 30, 40], [30, 20, 60, 50]]
        classes[0, :2] = [0, 2]
        masks[0, 0, 6:40, 4:30] = 1
        masks[0, 1, 20:50, 30:60] = 1
    y = {"boxes": boxes, "classes": classes}
    if with_masks:
        y["masks"] = masks
    return y


def images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


def test_prediction_contract():
    model = small_model()
    out = model.predict_step(images())
    k = SMALL_OPTIONS["nms"]["max_detections"]
    assert out["boxes"].shape == (2, k, 4) and out["boxes"].dtype == tf.float32
    assert out["scores"].shape == (2, k) and out["classes"].shape == (2, k)
    assert out["classes"].dtype == tf.int32 and out["num_detections"].dtype == tf.int32
    boxes, classes = out["boxes"].numpy(), out["classes"].numpy()
    assert boxes.min() >= 0.0 and boxes.max() <= SIZE
    for image, count in enumerate(out["num_detections"].numpy()):
        assert set(classes[image, :count]) <= {0, 1, 2}
        assert np.all(classes[image, count:] == PAD_CLASS)


def _losses(model, x, y) -> dict[str, float]:
    raw = model.raw_outputs(x, training=False)
    total = model.compute_loss(x, y, raw, training=False)
    values = {name: float(tracker.result()) for name, tracker in model.loss_trackers.items()}
    return {"total": float(total), **values}


def test_images_without_objects_give_finite_losses_and_no_box_loss():
    model = small_model()
    losses = _losses(model, images(), targets(empty=True))
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["rpn_box"] == 0.0 and losses["roi_box"] == 0.0
    assert losses["rpn_objectness"] > 0.0 and losses["roi_class"] > 0.0


def test_losses_with_objects_are_positive_and_finite():
    model = small_model()
    losses = _losses(model, images(), targets())
    assert all(np.isfinite(v) and v > 0.0 for v in losses.values())


def test_features_only_model_shares_its_layers_with_the_full_model():
    full = small_model()
    x = images()
    features = full.backbone(x)
    head_only = FasterRCNN(None, full.neck, full.rpn_head, full.box_head, image_size=(SIZE, SIZE),
                           options=full.options)
    rebuilt = head_only.with_backbone(full.backbone)
    assert rebuilt.neck is full.neck and rebuilt.box_head is full.box_head
    from_features = head_only.predict_step({name: features[name] for name in LEVELS})
    from_pixels = rebuilt.predict_step(x)
    np.testing.assert_allclose(from_features["boxes"].numpy(), from_pixels["boxes"].numpy(), atol=1e-4)
    with pytest.raises(TwoStageConfigError, match="image_size"):
        FasterRCNN(None, full.neck, full.rpn_head, full.box_head)


def test_parts_that_do_not_fit_are_named():
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    neck, box_head = FeaturePyramid(LEVELS, 16), BoxHead(3, 32)
    with pytest.raises(TwoStageConfigError, match="anchors per cell"):
        FasterRCNN(backbone, neck, RPNHead(LEVELS, 5, 16), box_head, options=SMALL_OPTIONS)
    with pytest.raises(TwoStageConfigError, match="unknown two-stage option"):
        TwoStageOptions.from_dict({"anchor_size": (8.0,)})
    with pytest.raises(TwoStageConfigError, match="rois_per_image"):
        TwoStageOptions.from_dict({**SMALL_OPTIONS, "rois_per_image": 64})
    options = TwoStageOptions.from_dict(SMALL_OPTIONS)
    assert TwoStageOptions.from_dict(options.to_dict()) == options


def test_targets_without_boxes_are_refused():
    model = small_model()
    with pytest.raises(TwoStageConfigError, match="boxes"):
        model.compute_loss(images(), {"classes": np.zeros((2, 4), np.int32)}, None)


def fit_steps(model, x, y, steps: int) -> list[float]:
    """Trains on one batch for `steps` steps (graph mode); returns the per-step losses."""
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, y, batch_size=len(x), epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_saved_model_predicts_the_same(tmp_path):
    model = small_model()
    x, y = images(), targets()
    losses = fit_steps(model, x, y, steps=8)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    for name in ("rpn_objectness_loss", "rpn_box_loss", "roi_class_loss", "roi_box_loss"):
        assert name in model.get_metrics_result()
    path = tmp_path / "faster_rcnn.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, FasterRCNN) and restored.options == model.options
    before, after = model.predict_step(x), restored.predict_step(x)
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(before[key].numpy(), after[key].numpy(), atol=1e-5)
