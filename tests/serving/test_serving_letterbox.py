"""The served graph's letterbox and its inverse, by hand, through `ServingModule`.

The transform itself (golden values, its vector form, dense and mask inverses) is tested
in `tests/models/test_letterbox.py`; here both signatures must apply it end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from serving_test_models import counting_instance_model, encode_image, random_pixels

from detseg.models.ops.letterbox import boxes_to_original, letterbox_transform
from detseg.serving.serving_module import ServingModule, ServingModuleError
from detseg.serving.task_outputs import PADDED_PIXEL, RawOutputError

S = 64


def _constant_detector(pixels):
    """Two fixed frame boxes for every image (no weights: a plain function as `infer`)."""
    batch = tf.shape(pixels)[0]
    boxes = tf.constant([[16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 64.0, 64.0]])
    return {"boxes": tf.tile(boxes[tf.newaxis], [batch, 1, 1]), "scores": tf.fill([batch, 2], 0.9),
            "classes": tf.tile(tf.constant([[1, 0]]), [batch, 1])}


def test_boxes_map_back_to_original_pixels_by_hand():
    module = ServingModule(_constant_detector, task="detection", letterbox=S, label_names=["a", "b"])
    # 32 x 48: scale 4/3, resized 43 x 64, pad_x 0, pad_y 10.  80 x 40: scale 0.8, resized 64 x 32, pad_x 16.
    images = [encode_image(random_pixels(32, 48, 0)), encode_image(random_pixels(80, 40, 1))]
    outputs = module.serving_default(tf.constant(images))
    expected = np.array([[[12.0, 0.0, 36.0, 22.5], [0.0, 0.0, 48.0, 32.0]],
                         [[0.0, 10.0, 40.0, 50.0], [0.0, 0.0, 40.0, 80.0]]], np.float32)
    np.testing.assert_allclose(outputs["boxes"].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(outputs["class_names"].numpy(), [[b"b", b"a"], [b"b", b"a"]])
    pixels = tf.constant(np.stack([random_pixels(32, 48, 2)] * 3))
    np.testing.assert_allclose(module.serving_pixels(pixels)["boxes"].numpy(), np.stack([expected[0]] * 3), atol=1e-4)
    ours = module.serving_pixels(pixels)["boxes"].numpy()[0]
    theirs = boxes_to_original(np.array([[16, 8, 48, 40], [0, 0, 64, 64]], np.float32),
                               letterbox_transform(32, 48, S)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_served_masks_stop_at_the_batchs_largest_detection_count():
    module = ServingModule(counting_instance_model, task="instance", letterbox=S, label_names=["a"])
    dark, bright = np.zeros([32, 48, 3], np.uint8), np.full([32, 48, 3], 255, np.uint8)
    outputs = {k: v.numpy() for k, v in module.serving_pixels(tf.constant(np.stack([dark, bright]))).items()}
    np.testing.assert_array_equal(outputs["num_detections"], [0, 3])
    assert outputs["masks"].shape == (2, 3, 32, 48)  # D = 3 of the 4 slots
    assert not outputs["masks"][0].any() and outputs["masks"][1].all()
    nothing = module.serving_pixels(tf.constant(np.stack([dark, dark])))
    assert nothing["masks"].shape == (2, 0, 32, 48)


def _half_frame_segmenter(pixels):
    """Logits at stride 2 saying class 1 right of the frame's centre line x = 32, class 0 left of it."""
    batch = tf.shape(pixels)[0]
    x = (tf.range(S // 2, dtype=tf.float32) + 0.5) * 2.0 - S / 2
    logits = tf.stack([-x, x], axis=-1)[tf.newaxis, tf.newaxis]  # [1, 1, 32, 2]
    return {"logits": tf.tile(logits, [batch, S // 2, 1, 1])}


def test_class_map_maps_back_to_original_pixels_by_hand():
    module = ServingModule(_half_frame_segmenter, task="semantic", letterbox=S, label_names=["left", "right"])
    # 40 x 30: scale 1.6, resized 64 x 48, pad_x 8: frame x > 32 <=> (col + 0.5) * 1.6 + 8 > 32 <=> col >= 15.
    # 20 x 64: scale 1, pad_y 22, pad_x 0: frame x > 32 <=> col >= 32.
    images = [encode_image(random_pixels(40, 30, 0)), encode_image(random_pixels(20, 64, 1))]
    outputs = {k: v.numpy() for k, v in module.serving_default(tf.constant(images)).items()}
    assert outputs["class_map"].shape == (2, 40, 64)  # padded to the largest height and width
    np.testing.assert_array_equal(outputs["image_height"], [40, 20])
    np.testing.assert_array_equal(outputs["image_width"], [30, 64])
    first = outputs["class_map"][0]
    np.testing.assert_array_equal(first[:, :15], 0)
    np.testing.assert_array_equal(first[:, 15:30], 1)
    np.testing.assert_array_equal(first[:, 30:], PADDED_PIXEL)
    second = outputs["class_map"][1]
    np.testing.assert_array_equal(second[:20, :32], 0)
    np.testing.assert_array_equal(second[:20, 32:], 1)
    np.testing.assert_array_equal(second[20:], PADDED_PIXEL)
    np.testing.assert_array_equal(outputs["label_names"], [[b"left", b"right"]] * 2)


def test_class_map_ids_use_nearest_sampling():
    def segmenter(pixels):
        logits = _half_frame_segmenter(pixels)["logits"]
        return {"class_map": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    module = ServingModule(segmenter, task="semantic", letterbox=S, label_names=["left", "right"])
    class_map = module.serving_pixels(tf.constant(random_pixels(40, 30, 0)[np.newaxis]))["class_map"].numpy()[0]
    assert class_map.shape == (40, 30)
    np.testing.assert_array_equal(class_map[:, :15], 0)
    np.testing.assert_array_equal(class_map[:, 15:], 1)


def test_classification_localization_by_hand():
    def classifier(pixels):
        batch = tf.shape(pixels)[0]
        return {"class_probabilities": tf.tile([[0.2, 0.8]], [batch, 1]),
                "box": tf.tile([[16.0, 8.0, 48.0, 40.0]], [batch, 1])}

    module = ServingModule(classifier, task="classification_localization", letterbox=S, label_names=["cat", "dog"])
    outputs = module.serving_default(tf.constant([encode_image(random_pixels(32, 48, 0))]))
    assert outputs["class"].numpy().tolist() == [1] and outputs["class_name"].numpy().tolist() == [b"dog"]
    np.testing.assert_allclose(outputs["score"].numpy(), [0.8])
    np.testing.assert_allclose(outputs["box"].numpy(), [[12.0, 0.0, 36.0, 22.5]], atol=1e-4)


def test_bad_module_arguments_are_named():
    with pytest.raises(ServingModuleError, match="task"):
        ServingModule(_constant_detector, task="tracking", letterbox=S, label_names=["a"])
    with pytest.raises(ServingModuleError, match="empty"):
        ServingModule(_constant_detector, task="detection", letterbox=S, label_names=[])
    with pytest.raises(ServingModuleError, match="line breaks"):
        ServingModule(_constant_detector, task="detection", letterbox=S, label_names=["a\nb"])
    with pytest.raises(ServingModuleError, match="letterbox size"):
        ServingModule(_constant_detector, task="detection", letterbox=0, label_names=["a"])
    module = ServingModule(lambda p: {"boxes": p}, task="detection", letterbox=S, label_names=["a"])
    with pytest.raises(RawOutputError, match="scores"):
        module.serving_pixels(tf.zeros([1, 8, 8, 3], tf.uint8))
