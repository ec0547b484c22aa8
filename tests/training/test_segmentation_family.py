"""FCN and U-Net through the two-stage trainer: configs, heads from cached shapes, a smoke run."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.training.config import load_config
from detseg.training.dataclass_yaml import ConfigError
from detseg.training.families import FAMILIES
from detseg.training.predictions import eval_targets, model_predictions
from detseg.training.run_model import load_run_model
from detseg.training.segmentation_family import (FCN_FAMILY, UNET_FAMILY, FCNHeadConfig, UNetHeadConfig,
                                                 build_fcn_family_head, build_unet_family_head)
from detseg.training.training_data import resolve_training_data

SHAPES_64 = {"P3": (8, 8, 32), "P4": (4, 4, 64), "P5": (2, 2, 128)}  # tiny backbone at 64 px


def test_the_families_are_registered_under_the_config_names():
    assert FAMILIES["fcn"] is FCN_FAMILY and FAMILIES["unet"] is UNET_FAMILY


def test_smoke_configs_load_with_their_head_sections():
    fcn = load_config("configs/smoke/fcn.yaml")
    assert fcn.model.head == FCNHeadConfig(variant="fcn8s", head_filters=16, dropout=0.0)
    unet = load_config("configs/smoke/unet.yaml", ["model.head.upsampling=nearest"])
    assert unet.model.head == UNetHeadConfig(decoder_filters=(16, 8), upsampling="nearest")
    with pytest.raises(ConfigError, match="variant"):
        load_config("configs/smoke/fcn.yaml", ["model.head.variant=fcn4s"])


@pytest.mark.parametrize("build, head", [(build_fcn_family_head, FCNHeadConfig(variant="fcn32s")),
                                         (build_unet_family_head, UNetHeadConfig())])
def test_heads_take_every_cached_level_and_give_one_channel_more_than_the_classes(build, head):
    model = build(SHAPES_64, 3, head)
    assert sorted(model.input) == ["P3", "P4", "P5"]  # the cached dict, whatever the head reads
    features = {level: np.zeros((2, *shape), np.float32) for level, shape in SHAPES_64.items()}
    assert tuple(model(features).shape) == (2, 64, 64, 4)  # background + 3 classes


@pytest.mark.slow
def test_fcn_smoke_run_trains_evaluates_and_reloads(smoke_run):
    config, result = smoke_run("fcn")[:2]  # the session's run (tests/conftest.py)
    assert result.headline_metric == "mean_iou" and 0.0 <= result.metrics["mean_iou"] <= 1.0
    assert result.metrics["class_names"] == ["background", "circle", "rectangle", "triangle"]
    run = load_run_model(result.run_dir)
    assert run.task == "semantic"
    # The reloaded model's predictions come back at each val image's own size.
    val = resolve_training_data(config).val
    truths = eval_targets(val, "semantic")
    for image_id, prediction in model_predictions(run.model, val, "semantic", config.model.image_size):
        assert prediction["class_map"].shape == truths[image_id].shape
