"""Learning-rate schedules: step decay, exponential, 1/t, cosine; each with linear warm-up.

All are one Keras `LearningRateSchedule` of the optimizer step `s` (0-based). With
`W` warm-up steps and `t = max(s - W, 0)` the steps since warm-up ended:

    warm-up (s < W):  base * (s + 1) / W
    constant:         base
    step:             base * rate ** floor(t / period)
    exponential:      base * rate ** (t / period)
    inverse_time:     base / (1 + rate * t / period)
    cosine:           base * (f + (1 - f) * (1 + cos(pi * min(t, T) / T)) / 2),  T = total - W

where `period` is `decay_steps`, `rate` is `decay_rate` and `f` is `min_lr_fraction`.
The schedule restarts with every stage (each stage has its own optimizer and base lr).
"""

from __future__ import annotations

import math

import keras
from keras import ops

SCHEDULE_KINDS = ("constant", "step", "exponential", "inverse_time", "cosine")


@keras.saving.register_keras_serializable(package="detseg")
class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One of `SCHEDULE_KINDS` after `warmup_steps` of linear warm-up (formulas above)."""

    def __init__(self, kind: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 decay_steps: int = 1, decay_rate: float = 0.5, min_lr_fraction: float = 0.0):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {list(SCHEDULE_KINDS)}, got {kind!r}")
        if decay_steps <= 0:
            raise ValueError(f"schedule decay_steps must be positive, got {decay_steps}")
        self.kind = kind
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.min_lr_fraction = float(min_lr_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        since_warmup = ops.maximum(step - float(self.warmup_steps), 0.0)
        decayed = self._decayed(since_warmup)
        if self.warmup_steps <= 0:
            return decayed
        warming = self.base_lr * (step + 1.0) / warmup
        return ops.where(step < float(self.warmup_steps), warming, decayed)

    def _decayed(self, t):
        base, rate, period = self.base_lr, self.decay_rate, float(self.decay_steps)
        if self.kind == "constant":
            return ops.convert_to_tensor(base, "float32") + 0.0 * t
        if self.kind == "step":
            return base * ops.power(rate, ops.floor(t / period))
        if self.kind == "exponential":
            return base * ops.power(rate, t / period)
        if self.kind == "inverse_time":
            return base / (1.0 + rate * t / period)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.minimum(t, span) / span
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return base * (self.min_lr_fraction + (1.0 - self.min_lr_fraction) * cosine)

    def get_config(self) -> dict:
        return {"kind": self.kind, "base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "min_lr_fraction": self.min_lr_fraction}


def schedule_for_stage(schedule_config, base_lr: float, steps_per_epoch: int,
                       epochs: int) -> WarmupDecaySchedule:
    """The schedule of one stage, its epoch-based config converted to optimizer steps.

    `schedule_config` is a `training.config.ScheduleConfig`.
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    return WarmupDecaySchedule(
        kind=schedule_config.kind,
        base_lr=base_lr,
        total_steps=steps_per_epoch * max(int(epochs), 1),
        warmup_steps=int(round(schedule_config.warmup_epochs * steps_per_epoch)),
        decay_steps=max(int(round(schedule_config.decay_epochs * steps_per_epoch)), 1),
        decay_rate=schedule_config.decay_rate,
        min_lr_fraction=schedule_config.min_lr_fraction,
    )
