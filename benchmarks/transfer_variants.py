"""The variants of `benchmarks/transfer_learning.py`, each trained under a CPU-time budget.

A variant's clock counts the CPU seconds of this process (`resource.getrusage`, all
threads: training, the input pipeline, the feature pass) since the variant started,
minus the time spent evaluating and the first step of each `fit` (graph tracing). Every `eval_every` counted CPU seconds (at the first
training step past each mark) and once at the end, the task's metric on the val split is
computed by the library's `EvaluationCallback.evaluate()` (COCO AP/AP50 for YOLO, loc.
accuracy for cls+loc) and appended to the variant's curve; `fit` stops at the first step
past the budget.

Variants (`Bench` holds what they share: data, sizes, head config, budget):

- `from_scratch`: random backbone + head, everything trains (BatchNorm too), augmented images.
- `bottleneck`: a pretrained backbone, frozen, runs once over the un-augmented train
  images (counted), then the head trains on those cached features. It can hand over a
  `Snapshot` (head weights, curve and clock so far) at a given CPU time, from which
- `fine_tune` continues: backbone + that head, `unfreeze` top blocks trainable (BatchNorm
  frozen or training), augmented images, its own learning rate, the clock carried on.
"""

from __future__ import annotations

import contextlib
import copy
import resource
from dataclasses import dataclass, field
from typing import Any

import keras

from detseg.data.coco import CocoDataset
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.backbones.transfer import freeze, unfreeze_top_blocks
from detseg.pipelines.augment import AugmentConfig
from detseg.pipelines.dataset import build_dataset
from detseg.training.evaluation_callback import EvaluationCallback
from detseg.training.feature_cache import CachedFeatures, extract_features
from detseg.training.model_family import ModelFamily
from detseg.training.transfer_stages import FEATURE_BATCH_SIZE, feature_batches

MANY_EPOCHS = 1_000_000  # fit runs until the budget callback stops it
BACKBONE_SEED, HEAD_SEED = 0, 1


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class BudgetClock:
    """Counted CPU seconds of one variant: since `start`, minus `excluding()` blocks, plus `offset`."""

    def __init__(self, offset: float = 0.0):
        self.start = cpu_seconds() - offset
        self.excluded = 0.0

    def counted(self) -> float:
        return cpu_seconds() - self.start - self.excluded

    @contextlib.contextmanager
    def excluding(self):
        before = cpu_seconds()
        try:
            yield
        finally:
            self.excluded += cpu_seconds() - before


@dataclass
class Bench:
    """What every variant of one task shares."""

    family: ModelFamily
    head_config: Any
    train: CocoDataset
    val: CocoDataset
    image_size: int
    batch_size: int
    budget: float          # counted CPU seconds per variant
    eval_every: float      # counted CPU seconds between evaluations
    lr: float
    augment: AugmentConfig

    @property
    def num_classes(self) -> int:
        return self.train.label_map.num_classes

    def backbone(self, name: str, weights, alpha: float = 1.0) -> keras.Model:
        keras.utils.set_random_seed(BACKBONE_SEED)
        size = (self.image_size, self.image_size)
        return build_backbone(name, size, None if weights is None else str(weights), alpha=alpha)

    def head(self, backbone: keras.Model) -> keras.Model:
        keras.utils.set_random_seed(HEAD_SEED)
        shapes = {level: feature_shape(backbone, level) for level in self.family.bottleneck_levels}
        return self.family.build_head(shapes, self.num_classes, self.head_config)

    def model(self, backbone, head) -> keras.Model:
        """Pixels in (`backbone` given) or cached features in (`backbone=None`)."""
        return self.family.build_model(backbone, head, self.head_config, self.image_size)

    def compile(self, model: keras.Model, lr: float) -> None:
        model.compile(keras.optimizers.Adam(lr), **self.family.compile_kwargs(self.head_config))

    def image_batches(self):
        return build_dataset(self.train, self.family.task, self.image_size, self.batch_size,
                             augment=self.augment, shuffle=True, seed=0)

    def evaluator(self, pixel_model: keras.Model) -> EvaluationCallback:
        return EvaluationCallback(self.val, self.family.task, self.image_size, model=pixel_model, prefix="")


@dataclass
class Curve:
    """One variant's metric against counted CPU seconds: `points` are dicts
    `{"cpu_s", "steps", "stage", <metric>: value, ...}` in time order."""

    points: list[dict] = field(default_factory=list)
    steps: int = 0
    first_step_cpu_s: list = field(default_factory=list)  # per `fit`: tracing + first step, not counted


@dataclass
class Snapshot:
    """A bottleneck run at one moment: where a fine-tuning variant continues from."""

    head_weights: list
    curve: Curve
    cpu_s: float


class BudgetCallback(keras.callbacks.Callback):
    """Counts steps, evaluates on schedule, snapshots once, stops `fit` at `until` CPU seconds."""

    def __init__(self, runner: "BudgetedRunner", until: float, stage: str,
                 snapshot_at: float | None = None, head: keras.Model | None = None):
        super().__init__()
        self.runner, self.until, self.stage = runner, until, stage
        self._steps_before_fit = runner.curve.steps
        self.snapshot_at, self.head = snapshot_at, head
        self.snapshot: Snapshot | None = None
        self._first_step_started: float | None = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._first_step_started is None:
            self._first_step_started = cpu_seconds()

    def on_train_batch_end(self, batch, logs=None):
        runner = self.runner
        if runner.curve.steps == self._steps_before_fit:
            # The first step of a `fit` traces the training graph (tens of CPU-s for lite0),
            # a one-off cost per run that would swamp these small budgets: not counted.
            first_step = cpu_seconds() - self._first_step_started
            runner.clock.excluded += first_step
            runner.curve.first_step_cpu_s.append(round(first_step, 1))
        runner.curve.steps += 1
        counted = runner.clock.counted()
        if runner.next_eval <= counted < self.until:
            runner.evaluate(self.stage)  # before a snapshot at the same step, so its curve has the point
        if self.snapshot_at is not None and self.snapshot is None and counted >= self.snapshot_at:
            self.snapshot = Snapshot(self.head.get_weights(), copy.deepcopy(runner.curve), counted)
        if counted >= self.until:
            self.model.stop_training = True


class BudgetedRunner:
    """The clock, the evaluator and the curve of one variant."""

    def __init__(self, bench: Bench, clock: BudgetClock | None = None, curve: Curve | None = None):
        self.bench = bench
        self.clock = clock or BudgetClock()
        self.curve = curve or Curve()
        self.evaluator: EvaluationCallback | None = None
        self.next_eval = self._next_mark(self.clock.counted())

    def _next_mark(self, counted: float) -> float:
        every = self.bench.eval_every
        return (int(counted // every) + 1) * every

    def watch(self, pixel_model: keras.Model) -> None:
        """Evaluate `pixel_model` from now on (building the evaluator is not counted)."""
        with self.clock.excluding():
            self.evaluator = self.bench.evaluator(pixel_model)

    def evaluate(self, stage: str) -> None:
        with self.clock.excluding():
            values = self.evaluator.evaluate()
        counted = self.clock.counted()
        self.curve.points.append({"cpu_s": round(counted, 1), "steps": self.curve.steps, "stage": stage,
                                  **{name: round(value, 4) for name, value in values.items()}})
        self.next_eval = self._next_mark(counted)

    def fit(self, model: keras.Model, batches, until: float, stage: str, **snapshot) -> BudgetCallback:
        callback = BudgetCallback(self, until, stage, **snapshot)
        model.fit(batches, epochs=MANY_EPOCHS, callbacks=[callback], verbose=0)
        return callback


def from_scratch(bench: Bench, backbone_name: str) -> Curve:
    """(a): random backbone, everything (BatchNorm included) trains on augmented images."""
    runner = BudgetedRunner(bench)
    backbone = bench.backbone(backbone_name, None)
    model = bench.model(backbone, bench.head(backbone))
    runner.watch(model)
    bench.compile(model, bench.lr)
    runner.fit(model, bench.image_batches(), bench.budget, "scratch")
    runner.evaluate("scratch")
    return runner.curve


def bottleneck(bench: Bench, backbone_name: str, weights, until: float, alpha: float = 1.0,
               snapshot_at: float | None = None) -> tuple[Curve, Snapshot]:
    """(b): frozen pretrained backbone, one counted feature pass, head trained on the features.

    Returns the curve up to `until` and the snapshot at `snapshot_at` (default: the end).
    """
    runner = BudgetedRunner(bench)
    backbone = bench.backbone(backbone_name, weights, alpha)
    freeze(backbone)
    levels = bench.family.bottleneck_levels
    plain = build_dataset(bench.train, bench.family.task, bench.image_size, FEATURE_BATCH_SIZE)
    features, targets = extract_features(backbone, plain, levels)
    cached = CachedFeatures(features, targets, key="in-memory")
    head = bench.head(backbone)
    head_model = bench.model(None, head)
    runner.watch(bench.model(backbone, head))
    bench.compile(head_model, bench.lr)
    callback = runner.fit(head_model, feature_batches(cached, levels, bench.batch_size, True, 0), until,
                          "bottleneck", snapshot_at=snapshot_at if snapshot_at is not None else until,
                          head=head)
    runner.evaluate("bottleneck")
    snapshot = callback.snapshot or Snapshot(head.get_weights(), copy.deepcopy(runner.curve),
                                             runner.clock.counted())
    return runner.curve, snapshot


def fine_tune(bench: Bench, snapshot: Snapshot, backbone_name: str, weights, lr: float,
              unfreeze, train_batchnorm: bool, alpha: float = 1.0) -> Curve:
    """(c)/(d)/ref stage 2: from `snapshot`'s head, top `unfreeze` blocks train until the budget.

    Rebuilding the backbone is not counted: the bottleneck run that made the snapshot
    already paid for building it once.
    """
    clock = BudgetClock(offset=snapshot.cpu_s)
    with clock.excluding():
        backbone = bench.backbone(backbone_name, weights, alpha)
        head = bench.head(backbone)
        head.set_weights(snapshot.head_weights)
        model = bench.model(backbone, head)
    runner = BudgetedRunner(bench, clock, copy.deepcopy(snapshot.curve))
    runner.watch(model)
    unfreeze_top_blocks(backbone, unfreeze, train_batchnorm=train_batchnorm)
    bench.compile(model, lr)
    runner.fit(model, bench.image_batches(), bench.budget, "fine-tune")
    runner.evaluate("fine-tune")
    return runner.curve
