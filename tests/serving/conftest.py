"""Session fixtures for the serving tests: sample images, a tiny detector exported once, a server.

Exports are made once per session and are read-only; tests that add versions copy the
base path first (`serving_test_models.copy_base_path`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_test_models import (FRAME, LABELS, MODEL_NAME, build_detection_model, encode_image,
                                 random_pixels, start_server)

from detseg.serving.export import export_saved_model
from detseg.serving.serving_module import ServingModule


@pytest.fixture(scope="session")
def sample_images() -> list[bytes]:
    """Four encoded images of different sizes and formats: PNG, JPEG, BMP and GIF."""
    sizes = [(48, 64), (80, 40), (64, 64), (30, 90)]
    formats = ["PNG", "JPEG", "BMP", "GIF"]
    return [encode_image(random_pixels(h, w, i), fmt) for i, ((h, w), fmt) in enumerate(zip(sizes, formats))]


@pytest.fixture(scope="session")
def detection_module() -> ServingModule:
    return ServingModule(build_detection_model(seed=0), task="detection", letterbox=FRAME, label_names=LABELS)


@pytest.fixture(scope="session")
def exported_detection(tmp_path_factory: pytest.TempPathFactory, detection_module: ServingModule) -> Path:
    """A base path `.../tiny/` holding version 1 of the tiny detector (read-only for tests)."""
    base = tmp_path_factory.mktemp("exports") / MODEL_NAME
    export_saved_model(detection_module, base)
    return base


@pytest.fixture(scope="session")
def exported_detection_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version folder of a second tiny detector (other weights), to drop into a base path."""
    module = ServingModule(build_detection_model(seed=100), task="detection", letterbox=FRAME, label_names=LABELS)
    return export_saved_model(module, tmp_path_factory.mktemp("exports_v2") / MODEL_NAME, write_config=False)


@pytest.fixture(scope="session")
def server(exported_detection: Path):
    """One embedded server (REST + gRPC on free ports, batching off) over the shared export."""
    running = start_server(exported_detection)
    yield running
    running.stop()
