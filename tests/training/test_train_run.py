"""A whole smoke run in-process: run directory contents, what each stage may change,
re-running and the NaN stop.

The cls+loc run is the session's shared one (`smoke_run` in tests/conftest.py); that the
same config gives the same weights and metrics is checked in test_train_resume.py, where
a `detseg train` of this config killed mid-run and resumed must end with this run's
weights and evaluation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config  # no public getter

from detseg.data.coco import LabelMap
from detseg.training.callbacks import TrainingDivergedError, read_metrics
from detseg.training.config import load_config
from detseg.training.run_directory import RunDirectoryError
from detseg.training.trainer import train
from detseg.training.transfer_stages import build_backbone_for

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke" / "clsloc.yaml"
pytestmark = pytest.mark.slow


def smoke_config(runs_dir: Path, *overrides: str):
    return load_config(SMOKE, [f"runs_dir={runs_dir}", *overrides])


@pytest.fixture(scope="module")
def clsloc_run(smoke_run):
    """The session's cls+loc smoke run (tests/conftest.py): `(config, result)`."""
    run = smoke_run("clsloc")
    return run.config, run.result


def backbone_of(model: keras.Model) -> keras.Model:
    return model.backbone


def weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    """Weights keyed by layer name / variable name (stable across two builds of a backbone)."""
    return {f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights}


def test_run_directory_holds_everything(clsloc_run):
    config, result = clsloc_run
    root = result.run_dir
    assert root == config.run_dir
    assert load_config(root / "config.yaml") == config
    label_map = LabelMap.from_dict(json.loads((root / "label_map.json").read_text()))
    assert label_map.names == ("circle", "rectangle", "triangle")
    rows = read_metrics(root / "metrics.csv")
    stage2_epochs = config.stage2.epochs
    assert [(int(r["stage"]), int(r["epoch"])) for r in rows] == [(1, 1), (1, 2)] + [
        (2, e) for e in range(1, stage2_epochs + 1)]
    assert all(float(r["lr"]) >= 0 and np.isfinite(float(r["val_loss"])) for r in rows)
    assert float(rows[0]["lr"]) > 0
    for stage in (1, 2):
        assert (root / "checkpoints" / f"stage{stage}_best.weights.h5").is_file()
    assert sorted(p.name for p in (root / "checkpoints").glob("*_last_*")) == [
        f"stage2_last_e{stage2_epochs:04d}.weights.h5"]
    state = json.loads((root / "checkpoints" / "state.json").read_text())
    assert state["run_done"] and state["stage"] == 2 and state["epochs_done"] == stage2_epochs
    evaluation = json.loads((root / "evaluation.json").read_text())
    assert evaluation == result.metrics
    assert 0.0 <= evaluation["localization_accuracy"] <= evaluation["accuracy"] <= 1.0
    assert evaluation["num_samples"] == sum(1 for i in _val_images(config) if i.annotations)


def _val_images(config):
    from detseg.training.training_data import resolve_training_data

    return resolve_training_data(config).val.images


def test_tensorboard_logs_have_scalars_per_stage(clsloc_run):
    config, result = clsloc_run
    for stage, epochs in ((1, config.stage1.epochs), (2, config.stage2.epochs)):
        files = list((result.run_dir / "tensorboard" / f"stage{stage}").glob("events.out.tfevents.*"))
        assert files
        steps_by_tag: dict[str, list[int]] = {}
        for record in tf.data.TFRecordDataset([str(f) for f in files]):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                steps_by_tag.setdefault(value.tag, []).append(event.step)
        assert steps_by_tag["loss"] == list(range(1, epochs + 1))
        assert {"val_loss", "learning_rate", "localization_accuracy"} <= set(steps_by_tag)


def test_final_model_reloads_and_predicts_the_same(clsloc_run):
    config, result = clsloc_run
    model = keras.saving.load_model(result.run_dir / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    outputs = model(images, training=False)
    assert outputs["class_probabilities"].shape == (2, 3) and outputs["box"].shape == (2, 4)
    again = keras.saving.load_model(result.run_dir / "model.keras")(images, training=False)
    np.testing.assert_allclose(again["box"], outputs["box"], rtol=1e-6)


def test_stage2_changes_unfrozen_weights_only_and_no_batchnorm_statistics(clsloc_run):
    config, result = clsloc_run
    initial = weights_by_path(build_backbone_for(config))
    tuned = weights_by_path(backbone_of(keras.saving.load_model(result.run_dir / "model.keras")))
    assert initial.keys() == tuned.keys()
    changed = {key for key in initial if not np.array_equal(initial[key], tuned[key])}
    # unfreeze=1: only the top block (stage4) trains, and never its BatchNorm layers.
    assert changed, "fine-tuning changed no backbone weight"
    assert all(key.startswith("stage4_") for key in changed), sorted(changed)
    assert not any("_bn/" in key for key in changed), sorted(changed)
    top_convs = [k for k in initial if k.startswith("stage4_") and "conv" in k.split("/")[0]]
    assert set(top_convs) <= changed


def test_rerun_of_a_finished_run_does_not_train_again(clsloc_run):
    config, result = clsloc_run
    model_file = result.run_dir / "model.keras"
    stamp = model_file.stat().st_mtime_ns
    messages: list[str] = []
    again = train(config, verbose=0, log=messages.append)
    assert again.resumed and again.metrics == result.metrics
    assert any("already complete" in m for m in messages)
    assert model_file.stat().st_mtime_ns == stamp
    # Determinism was the run's, not the process's (it would turn XLA off for later models).
    assert not tf_framework_config.is_op_determinism_enabled()


def test_a_different_config_cannot_continue_a_run(clsloc_run, smoke_run):
    config, _ = clsloc_run
    changed = smoke_config(config.runs_dir, *smoke_run("clsloc").overrides, "stage1.lr=0.5")
    assert changed.run_dir == config.run_dir
    with pytest.raises(RunDirectoryError, match="different config.*--restart"):
        train(changed, verbose=0, log=lambda message: None)


def test_nan_loss_stops_the_run_with_a_clear_message(tmp_path):
    config = smoke_config(tmp_path, "name=diverges", "stage2.epochs=0", "optimizer.kind=sgd",
                          "stage1.lr=1e30", "schedule.kind=constant", "schedule.warmup_epochs=0")
    with pytest.raises(TrainingDivergedError, match=r"loss is (nan|inf).*stage 1.*stage1\.lr"):
        train(config, verbose=0, log=lambda message: None)
    rows = read_metrics(config.run_dir / "metrics.csv")
    assert len(rows) <= 1  # stopped in its first epoch


def test_stage0_pretrains_the_backbone_offline_and_stage1_trains_only_the_head(tmp_path):
    config = smoke_config(tmp_path, "name=with_stage0", "pretrain.epochs=1", "pretrain.image_size=32",
                          "stage1.epochs=1", "stage2.epochs=0")
    messages: list[str] = []
    result = train(config, verbose=0, log=messages.append)
    weights = result.run_dir / "pretrain" / "backbone.weights.h5"
    assert weights.is_file() and (result.run_dir / "pretrain" / "backbone.json").is_file()
    assert any("stage 0: pretraining" in m for m in messages)
    pretrained = build_backbone_for(replace(config, model=replace(config.model, weights=str(weights))))
    model = keras.saving.load_model(result.run_dir / "model.keras")
    # Stage 2 did not run and stage 1 (cached features) changes no backbone weight: the
    # final backbone IS the pretrained one, not a random one, and not a trained one ...
    for a, b in zip(pretrained.get_weights(), backbone_of(model).get_weights()):
        np.testing.assert_array_equal(a, b)
    # ... but stage 1 trains the head.
    keras.utils.set_random_seed(config.seed + 1)  # the head's initialization (build_head_for)
    fresh_head = model.head.__class__.from_config(model.head.get_config())
    assert not all(np.array_equal(a, b) for a, b in zip(fresh_head.get_weights(), model.head.get_weights()))
    assert load_config(result.run_dir / "config.yaml").model.weights is None  # the config as given


def test_stage0_and_explicit_weights_are_exclusive(tmp_path):
    from detseg.training.config import ConfigError

    with pytest.raises(ConfigError, match="pretrain.epochs > 0"):
        smoke_config(tmp_path, "pretrain.epochs=1", "model.weights=x.weights.h5")
