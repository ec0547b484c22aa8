"""Instance masks over real REST and gRPC on 127.0.0.1: one mask per detection, none when none."""

from __future__ import annotations

import numpy as np
import pytest
from serving_test_models import MODEL_NAME, counting_instance_model, encode_image, start_server

from detseg.serving.export import export_saved_model
from detseg.serving.image_predictions import ServedModelImages, predict_encoded
from detseg.serving.serving_module import ServingModule

DARK = encode_image(np.zeros([32, 48, 3], np.uint8), "PNG")      # no detections
BRIGHT = encode_image(np.full([40, 30, 3], 255, np.uint8), "PNG")  # 3 detections, full-image masks


@pytest.fixture(scope="module")
def instance_server(tmp_path_factory):
    module = ServingModule(counting_instance_model, task="instance", letterbox=64, label_names=["a"])
    base = tmp_path_factory.mktemp("instance") / MODEL_NAME
    export_saved_model(module, base)
    running = start_server(base)
    yield running
    running.stop()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_each_image_gets_one_mask_per_detection_even_when_the_request_has_none(instance_server, protocol):
    address = instance_server.rest_url if protocol == "rest" else instance_server.grpc_target
    served = ServedModelImages(address, MODEL_NAME)
    try:
        (_, nothing), = predict_encoded(served, [(1, "dark.png", DARK)])
        (_, none), (_, three) = predict_encoded(served, [(1, "dark.png", DARK), (2, "bright.png", BRIGHT)])
    finally:
        served.close()
    for empty in (nothing, none):
        assert empty["num_detections"] == 0 and empty["masks"].shape == (0, 32, 48)
    assert three["num_detections"] == 3 and three["masks"].shape == (3, 40, 30) and three["masks"].all()
