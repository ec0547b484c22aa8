"""Mask R-CNN: mask head, mask targets and loss, pasting, prediction contract, training, save/load."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.models.rcnn.mask_rcnn import MaskRCNN, build_mask_rcnn
from detseg.models.rcnn.mask_head import MaskHead
from detseg.models.rcnn.mask_paste import paste_masks
from detseg.models.rcnn.mask_targets import mask_loss, mask_targets
from test_faster_rcnn import SIZE, SMALL_OPTIONS, images, small_model, targets


def test_mask_head_doubles_the_side_and_has_a_channel_per_class():
    head = MaskHead(num_classes=3, channels=8, num_convs=2)
    out = head(tf.zeros([2, 5, 14, 14, 16]))
    assert out.shape == (2, 5, 28, 28, 3) and out.dtype == tf.float32


def test_mask_targets_are_the_gt_mask_inside_each_roi():
    masks = np.zeros((1, 2, 16, 16), np.uint8)
    masks[0, 0, 4:12, 2:10] = 1          # object 0: x 2..10, y 4..12
    masks[0, 1, 0:8, 8:16] = 1           # object 1: the top-right quarter
    rois = tf.constant([[[2.0, 4.0, 10.0, 12.0], [2.0, 4.0, 18.0, 12.0], [0.0, 0.0, 16.0, 16.0]]])
    matched = tf.constant([[0, 0, 1]])
    out = mask_targets(tf.constant(masks), matched, rois, 4).numpy()[0]
    np.testing.assert_array_equal(out[0], np.ones((4, 4)))                     # the box itself
    np.testing.assert_array_equal(out[1], np.tile([1, 1, 0, 0], (4, 1)))       # twice as wide
    np.testing.assert_array_equal(out[2], [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_mask_loss_reads_only_the_gt_class_channel_of_positive_rois():
    targets_ = tf.ones([1, 2, 4, 4])
    logits = np.zeros((1, 2, 4, 4, 3), np.float32)
    logits[0, 0, ..., 1] = 10.0           # RoI 0 is class 1: a confident, correct mask
    changed = logits.copy()
    changed[0, 0, ..., 0] = -50.0         # other class channels do not matter
    changed[0, 1] = -50.0                 # nor does the negative RoI
    classes, positive = tf.constant([[1, 3]]), tf.constant([[True, False]])
    expected = np.log1p(np.exp(-10.0))
    assert float(mask_loss(tf.constant(logits), targets_, classes, positive)) == pytest.approx(expected, rel=1e-4)
    assert float(mask_loss(tf.constant(changed), targets_, classes, positive)) == pytest.approx(expected, rel=1e-4)
    assert float(mask_loss(tf.constant(logits), targets_, classes, tf.zeros([1, 2], bool))) == 0.0


def test_pasting_puts_each_mask_in_its_box():
    masks = np.ones((1, 2, 4, 4), np.float32)
    masks[0, 1, :, :2] = 0.0              # mask 1: only its right half
    boxes = tf.constant([[[2.0, 1.0, 6.0, 5.0], [0.0, 0.0, 8.0, 8.0]]])
    pasted = paste_masks(tf.constant(masks), boxes, (8, 8)).numpy()[0]
    expected0 = np.zeros((8, 8))
    expected0[1:5, 2:6] = 1.0
    np.testing.assert_allclose(pasted[0], expected0, atol=1e-6)
    # Mask 1 spans the image at 2 px per cell. Row 2 (cell coordinate 0.75, interior):
    # columns 0-2 read cells 0-1 (0); pixel centre 3.5 sits at cell coordinate 1.25, a
    # quarter of the way from cell 1 (0) to cell 2 (1); pixel centre 7.5 sits a quarter
    # cell past the last cell, towards the zero padding: 0.75.
    np.testing.assert_allclose(pasted[1][2], [0, 0, 0, 0.25, 0.75, 1, 1, 0.75], atol=1e-6)
    # Row 0 (cell coordinate -0.25) fades towards the padding the same way: x 0.75.
    np.testing.assert_allclose(pasted[1][0], 0.75 * pasted[1][2], atol=1e-6)


def test_prediction_contract_has_masks_in_the_input_frame():
    model = small_model(build_mask_rcnn, mask_channels=8)
    out = model.predict_step(images())
    k = SMALL_OPTIONS["nms"]["max_detections"]
    assert out["masks"].shape == (2, k, SIZE, SIZE) and out["masks"].dtype == tf.float32
    masks = out["masks"].numpy()
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    for image, count in enumerate(out["num_detections"].numpy()):
        assert np.all(masks[image, count:] == 0.0)
        for slot in range(count):  # nothing outside the detection's box (+ half a mask cell)
            x0, y0, x1, y1 = out["boxes"].numpy()[image, slot]
            margin = (max(x1 - x0, y1 - y0) / 28.0) / 2 + 1
            ys, xs = np.nonzero(masks[image, slot] > 0)
            if len(xs):
                assert xs.min() >= x0 - margin and xs.max() <= x1 + margin
                assert ys.min() >= y0 - margin and ys.max() <= y1 + margin


def test_masks_run_on_the_slots_in_use_and_give_each_detection_its_mask_from_all_slots():
    """The mask branch runs on the first max(num_detections) slots only: each detection's
    mask must equal the one computed with every slot, and padding slots stay zero."""
    model = small_model(build_mask_rcnn, mask_channels=8)
    features = model.pyramid(tf.constant(images()), training=False)
    k = SMALL_OPTIONS["nms"]["max_detections"]
    corners = np.random.default_rng(1).uniform(0, SIZE / 2, (2, k, 2)).astype(np.float32)
    boxes = tf.constant(np.concatenate([corners, corners + SIZE / 3], axis=-1))
    classes = tf.constant(np.random.default_rng(2).integers(0, 3, (2, k)), tf.int32)
    counts = np.array([2, 5])
    detections = {"boxes": boxes, "scores": tf.ones([2, k]), "classes": classes,
                  "num_detections": tf.constant(counts, tf.int32)}
    masks = model.add_detection_outputs(features, detections)["masks"].numpy()
    every_slot = tf.sigmoid(model.class_mask_logits(features, boxes, classes))
    expected = paste_masks(every_slot, boxes, (SIZE, SIZE)).numpy()
    assert masks.shape == (2, k, SIZE, SIZE)
    for image, count in enumerate(counts):
        np.testing.assert_allclose(masks[image, :count], expected[image, :count], atol=1e-6)
        assert not masks[image, count:].any()
    none = model.add_detection_outputs(features, {**detections, "num_detections": tf.zeros([2], tf.int32)})
    assert none["masks"].shape == (2, k, SIZE, SIZE) and not none["masks"].numpy().any()


def test_images_without_objects_give_finite_losses_and_no_mask_loss():
    model = small_model(build_mask_rcnn, mask_channels=8)
    x = images()
    raw = model.raw_outputs(x, training=False)
    total = model.compute_loss(x, targets(with_masks=True, empty=True), raw, training=False)
    values = {name: float(tracker.result()) for name, tracker in model.loss_trackers.items()}
    assert np.isfinite(float(total)) and all(np.isfinite(v) for v in values.values())
    assert values["mask"] == 0.0 and values["roi_box"] == 0.0 and values["rpn_box"] == 0.0


def test_mask_targets_are_required():
    model = small_model(build_mask_rcnn, mask_channels=8)
    x = images()
    with pytest.raises(ValueError, match="masks"):
        model.compute_loss(x, targets(with_masks=False), model.raw_outputs(x), training=False)


@pytest.mark.slow
def test_training_lowers_every_loss_and_the_saved_model_predicts_the_same(tmp_path):
    model = small_model(build_mask_rcnn, mask_channels=8)
    x, y = images(), targets(with_masks=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, y, batch_size=2, epochs=8, verbose=0, shuffle=False).history
    assert np.mean(history["loss"][-2:]) < 0.8 * np.mean(history["loss"][:2])
    assert history["mask_loss"][-1] < history["mask_loss"][0]
    path = tmp_path / "mask_rcnn.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, MaskRCNN)
    before, after = model.predict_step(x), restored.predict_step(x)
    for key in ("boxes", "scores", "classes", "num_detections", "masks"):
        np.testing.assert_allclose(before[key].numpy(), after[key].numpy(), atol=1e-5)
