"""Learning-rate schedules against values computed by hand from their formulas."""

from __future__ import annotations

import math

import keras
import pytest

from detseg.training.config import ScheduleConfig
from detseg.training.schedules import WarmupDecaySchedule, schedule_for_stage


def lr(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize("step, expected", [(0, 0.1), (9, 0.1), (10, 0.05), (25, 0.025)])
def test_step_decay_halves_every_period(step, expected):
    schedule = WarmupDecaySchedule("step", 0.1, total_steps=100, decay_steps=10, decay_rate=0.5)
    assert lr(schedule, step) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("step, expected", [(0, 0.1), (5, 0.1 * math.sqrt(0.5)), (20, 0.025)])
def test_exponential_decays_continuously(step, expected):
    schedule = WarmupDecaySchedule("exponential", 0.1, total_steps=100, decay_steps=10, decay_rate=0.5)
    assert lr(schedule, step) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("step, expected", [(0, 0.1), (10, 0.05), (30, 0.025)])
def test_inverse_time_is_one_over_t(step, expected):
    schedule = WarmupDecaySchedule("inverse_time", 0.1, total_steps=100, decay_steps=10, decay_rate=1.0)
    assert lr(schedule, step) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("step, expected", [
    (0, 0.1), (25, 0.05 * (1 + math.cos(math.pi / 4))), (50, 0.05), (100, 0.0), (150, 0.0)])
def test_cosine_reaches_zero_at_the_end(step, expected):
    schedule = WarmupDecaySchedule("cosine", 0.1, total_steps=100)
    assert lr(schedule, step) == pytest.approx(expected, abs=1e-7)


def test_cosine_floor_is_min_lr_fraction():
    schedule = WarmupDecaySchedule("cosine", 0.1, total_steps=100, min_lr_fraction=0.1)
    assert lr(schedule, 100) == pytest.approx(0.01, rel=1e-6)
    assert lr(schedule, 50) == pytest.approx(0.01 + 0.09 * 0.5, rel=1e-6)


@pytest.mark.parametrize("kind", ["constant", "step", "exponential", "inverse_time", "cosine"])
def test_warmup_ramps_linearly_then_decay_starts_from_base(kind):
    schedule = WarmupDecaySchedule(kind, 0.1, total_steps=104, warmup_steps=4, decay_steps=10)
    assert [lr(schedule, s) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1], rel=1e-6)
    assert lr(schedule, 4) == pytest.approx(0.1, rel=1e-6)  # decay clock starts after warm-up


def test_cosine_with_warmup_spans_the_remaining_steps():
    schedule = WarmupDecaySchedule("cosine", 0.1, total_steps=104, warmup_steps=4)
    assert lr(schedule, 54) == pytest.approx(0.05, rel=1e-6)
    assert lr(schedule, 104) == pytest.approx(0.0, abs=1e-7)


def test_schedule_for_stage_converts_epochs_to_steps():
    config = ScheduleConfig(kind="step", warmup_epochs=0.5, decay_epochs=2.0, decay_rate=0.1)
    schedule = schedule_for_stage(config, base_lr=0.01, steps_per_epoch=8, epochs=6)
    assert (schedule.warmup_steps, schedule.decay_steps, schedule.total_steps) == (4, 16, 48)
    assert lr(schedule, 4 + 16) == pytest.approx(0.001, rel=1e-6)


def test_schedule_survives_keras_serialization():
    schedule = WarmupDecaySchedule("inverse_time", 0.2, total_steps=50, warmup_steps=3, decay_steps=7,
                                   decay_rate=0.3)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert restored.get_config() == schedule.get_config()
    assert lr(restored, 20) == pytest.approx(0.2 / (1 + 0.3 * 17 / 7), rel=1e-6)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="linear"):
        WarmupDecaySchedule("linear", 0.1, total_steps=10)
