"""Mask R-CNN through the generic export: SavedModel -> reload -> the same detections and masks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from detseg.models.rcnn.mask_rcnn import build_mask_rcnn
from detseg.serving.export import export_saved_model
from detseg.serving.serving_module import PIXELS_SIGNATURE, serving_module_for
from test_faster_rcnn import SIZE, images, small_model


@pytest.mark.slow
def test_exported_mask_rcnn_serves_the_models_detections_and_masks(tmp_path):
    model = small_model(build_mask_rcnn, mask_channels=8)
    module = serving_module_for(model, "instance", SIZE, ["a", "b", "c"])
    version = export_saved_model(module, tmp_path / "shapes", write_config=False)
    served = tf.saved_model.load(str(version)).signatures[PIXELS_SIGNATURE]
    pixels = images(seed=3).astype(np.uint8)  # same size as the frame: the letterbox is the identity
    outputs = {k: v.numpy() for k, v in served(pixels=tf.constant(pixels)).items()}
    direct = {k: v.numpy() for k, v in model.predict_step(pixels.astype(np.float32)).items()}
    for image in range(len(pixels)):
        count = int(direct["num_detections"][image])
        assert int(outputs["num_detections"][image]) == count
        np.testing.assert_allclose(outputs["boxes"][image, :count], direct["boxes"][image, :count], atol=1e-3)
        np.testing.assert_allclose(outputs["scores"][image, :count], direct["scores"][image, :count], atol=1e-5)
        np.testing.assert_array_equal(outputs["classes"][image, :count], direct["classes"][image, :count])
        served_masks = outputs["masks"][image, :count]
        expected = (direct["masks"][image, :count] >= 0.5).astype(np.uint8)
        assert served_masks.shape == (count, SIZE, SIZE)
        # Identity resampling: only pixels within float rounding of the 0.5 threshold may differ.
        assert np.mean(served_masks != expected) < 1e-3
