"""The two transfer-learning stages and the final model, for any `ModelFamily`.

Stage 1 (bottleneck): the backbone, frozen, runs ONCE over the un-augmented train and val
images; the features are cached on disk (`training.feature_cache`) and the new head
trains on them alone, which is cheap. Augmentation cannot apply to features computed
once, so stage 1 never sees augmented images.

Stage 2 (fine-tuning): the whole model (backbone + the stage-1 head) trains on augmented
images with the top `stage2.unfreeze` backbone blocks trainable (or `all`); BatchNorm
layers stay frozen and in inference mode (`models.transfer.unfreeze_top_blocks`) unless
`stage2.batchnorm: train`; the
learning rate is `stage2.lr`, normally lower.

Both stages continue from `RunState` after a crash: the model and optimizer state come
back from the last checkpoint and `fit` starts at the next epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import keras
import tensorflow as tf

from detseg.core.contract import PAD_PIXEL_VALUE
from detseg.models.backbones.registry import build_backbone, feature_shape
from detseg.models.backbones.transfer import freeze, unfreeze_top_blocks, weights_fingerprint
from detseg.models.task_model import build_optimizer_slots
from detseg.pipelines.dataset import build_dataset, build_eval_dataset, build_training_passes, pipeline_options
from detseg.training.callbacks import (MetricsCsv, NanLossStop, ScalarEventLog, StageCheckpoint,
                                       diverged_error, patience_used_up, truncate_metrics)
from detseg.training.config import ConfigError, TrainConfig
from detseg.training.config_schema import OPTIMIZER_KINDS
from detseg.training.ema import AveragedWeightsAtEpochEnd, ema_optimizer_options, swap_weights_with_averages
from detseg.training.evaluation_callback import DEFAULT_PREFIX, LOGGED_METRICS, EvaluationCallback
from detseg.training.feature_cache import (CachedFeatures, FeatureCache, cache_key, dataset_digest,
                                           extract_features)
from detseg.training.model_family import ModelFamily
from detseg.training.multiworker_fit import fit_multiworker
from detseg.training.run_directory import RunDirectory, RunState
from detseg.training.schedules import schedule_for_stage
from detseg.training.strategy import wait_for_all_workers
from detseg.training.training_data import TrainingData

FEATURE_BATCH_SIZE = 32  # batch size of the one-off feature extraction pass


@dataclass
class TrainingSession:
    """Everything the stages share for one run."""

    config: TrainConfig
    family: ModelFamily
    data: TrainingData
    run_dir: RunDirectory
    strategy: tf.distribute.Strategy
    log: Callable[[str], None]
    verbose: int
    extra_callbacks: tuple = ()  # Keras callbacks run after the run's own in every stage

    @property
    def num_classes(self) -> int:
        return self.data.label_map.num_classes

    @property
    def image_size(self) -> int:
        return self.config.model.image_size


def build_backbone_for(config: TrainConfig) -> keras.Model:
    """The configured backbone, initialized identically in every process.

    Re-seeding first makes a randomly initialized backbone (`weights: null`) the same in
    stage 1, stage 2 and a resumed process, so cached features stay valid for it.
    """
    keras.utils.set_random_seed(config.seed)
    size = config.model.image_size
    return build_backbone(config.model.backbone, (size, size), config.model.weights, alpha=config.model.alpha)


def build_head_for(session: TrainingSession, backbone: keras.Model) -> keras.Model:
    return _build_head(session.family, session.config, backbone, session.num_classes)


def _build_head(family: ModelFamily, config: TrainConfig, backbone: keras.Model, num_classes: int) -> keras.Model:
    keras.utils.set_random_seed(config.seed + 1)
    shapes = {level: feature_shape(backbone, level) for level in family.bottleneck_levels}
    return family.build_head(shapes, num_classes, config.model.head)


def build_task_model(config: TrainConfig, family: ModelFamily, num_classes: int) -> tuple[keras.Model, keras.Model]:
    """`config`'s whole task model (backbone + fresh head, every layer trainable) and its
    backbone, built under the caller's dtype policy: what stage 2 trains, for tests and
    benchmarks of single steps."""
    backbone = build_backbone_for(config)
    head = _build_head(family, config, backbone, num_classes)
    return family.build_model(backbone, head, config.model.head, config.model.image_size), backbone


def build_optimizer(config: TrainConfig, schedule) -> keras.optimizers.Optimizer:
    """The configured Keras optimizer (`optimizer.kind`) at learning rate `schedule`.

    With `ema.enabled` it also keeps the weights' moving average (`training.ema`).
    """
    options = config.optimizer
    common = {"clipnorm": options.clipnorm} if options.clipnorm else {}
    common.update(ema_optimizer_options(config.ema))
    if options.kind == "sgd":
        return keras.optimizers.SGD(schedule, momentum=options.momentum, nesterov=options.nesterov, **common)
    if options.kind == "adagrad":
        return keras.optimizers.Adagrad(schedule, **common)
    if options.kind == "rmsprop":
        return keras.optimizers.RMSprop(schedule, **common)
    if options.kind == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay, **common)
    if options.kind == "adam":
        return keras.optimizers.Adam(schedule, **common)
    raise ConfigError(f"optimizer.kind must be one of {list(OPTIMIZER_KINDS)}, got {options.kind!r}")


# ---------------------------------------------------------------------------- stage 1


def bottleneck_features(session: TrainingSession, backbone: keras.Model, split: str) -> CachedFeatures:
    """Cached features of the `split` ("train" or "val") images; computed on a cache miss."""
    config, family = session.config, session.family
    dataset = getattr(session.data, split)
    key = cache_key(data=dataset_digest(dataset), backbone=config.model.backbone, alpha=config.model.alpha,
                    weights=weights_fingerprint(backbone), image_size=config.model.image_size,
                    preprocessing={"task": family.task, "letterbox_fill": PAD_PIXEL_VALUE,
                                   "augment": None, "levels": list(family.bottleneck_levels),
                                   # a mixed-precision backbone computes other features
                                   **({"precision": config.precision} if config.precision != "float32" else {})})
    cache = FeatureCache(config.stage1.cache_dir or session.run_dir.feature_cache_dir)
    cached = cache.load(key)
    if cached is not None:
        session.log(f"stage 1: {split} features reused from the cache ({cache.entry_dir(key)})")
        return cached
    session.log(f"stage 1: computing {split} bottleneck features of {len(dataset.images)} images "
                f"(cache {cache.entry_dir(key)})")
    batches = build_dataset(dataset, family.task, config.model.image_size, FEATURE_BATCH_SIZE)
    features, targets = extract_features(backbone, batches, family.bottleneck_levels)
    return cache.store(key, features, targets, {"split": split, "source": str(dataset.source)})


def feature_batches(cached: CachedFeatures, levels: tuple[str, ...], batch_size: int,
                    shuffle: bool, seed: int, first_pass: int | None = None) -> tf.data.Dataset:
    """`(features, y)` batches from cached arrays; one level gives a tensor, more a dict.

    `first_pass` (training): endless passes from that pass number on, each pass's order a
    function of `(seed, pass number)` alone, as `build_training_passes` does for images,
    so a resumed run gets the batches an uninterrupted one got.
    """
    features = cached.features[levels[0]] if len(levels) == 1 else {k: cached.features[k] for k in levels}
    if first_pass is None:
        examples = tf.data.Dataset.from_tensor_slices((features, cached.targets))
        if shuffle:
            examples = examples.shuffle(cached.num_examples, seed=seed, reshuffle_each_iteration=True)
        return examples.batch(batch_size).prefetch(2).with_options(pipeline_options())

    arrays = tf.nest.map_structure(tf.convert_to_tensor, (features, cached.targets))
    num_examples = cached.num_examples

    def one_pass(number: tf.Tensor) -> tf.data.Dataset:
        order = tf.range(num_examples, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64),
                                                                                    number]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gathered(indices: tf.Tensor):
        return tf.nest.map_structure(lambda array: tf.gather(array, indices), arrays)

    batches = tf.data.Dataset.counter(int(first_pass)).flat_map(one_pass).map(gathered)
    return batches.prefetch(2).with_options(pipeline_options())


def run_stage1(session: TrainingSession, state: RunState) -> RunState:
    """Trains the head on cached bottleneck features; returns the state with stage 1 done."""
    config = session.config
    extractor = build_backbone_for(config)
    freeze(extractor)
    train_features = bottleneck_features(session, extractor, "train")
    val_features = bottleneck_features(session, extractor, "val")
    levels = session.family.bottleneck_levels
    batch_size = config.stage1.batch_size
    passes, steps = passes_per_epoch(-(-train_features.num_examples // batch_size),
                                     config.stage1.min_steps_per_epoch, 1, session.log)
    train_batches = feature_batches(train_features, levels, batch_size, True, config.seed,
                                    first_pass=state.epochs_done * passes)
    val_batches = feature_batches(val_features, levels, batch_size, False, config.seed)
    with session.strategy.scope():
        head = build_head_for(session, extractor)
        head_model = session.family.build_model(None, head, config.model.head, session.image_size)
        _compile(session, head_model, config.stage1.lr, steps, config.stage1.epochs)
        _restore_if_resuming(session, head_model, state)
    # The task metric needs pixels in: the frozen extractor with the head being trained.
    pixel_model = session.family.build_model(extractor, head, config.model.head, session.image_size)
    return fit_stage(session, head_model, state, train_batches, val_batches, config.stage1.epochs,
                     steps, "stage1.lr", evaluated_model=pixel_model)


# ---------------------------------------------------------------------------- stage 2


def build_stage2_model(session: TrainingSession) -> tuple[keras.Model, keras.Model]:
    """`(model, backbone)`: backbone + head (from the stage-1 best checkpoint, if any)."""
    family, head_config = session.family, session.config.model.head
    backbone = build_backbone_for(session.config)
    head = build_head_for(session, backbone)
    stage1_best = session.run_dir.best_checkpoint(1)
    if session.config.stage1.epochs > 0 and stage1_best.is_file():
        # The checkpoint holds the stage-1 task model (head without backbone): load it
        # through the same wrapper, which shares `head`'s weights.
        family.build_model(None, head, head_config, session.image_size).load_weights(stage1_best)
    model = family.build_model(backbone, head, head_config, session.image_size)
    return model, backbone


def run_stage2(session: TrainingSession, state: RunState) -> RunState:
    """Fine-tunes the top blocks of the backbone with the head; returns the finished state."""
    config, family = session.config, session.family
    size, stage2 = config.model.image_size, config.stage2
    train_passes = build_training_passes(session.data.train, family.task, size, stage2.batch_size,
                                         augment=config.augment, seed=config.seed)
    passes, steps = passes_per_epoch(train_passes.steps_per_pass, stage2.min_steps_per_epoch, 2, session.log)
    train_batches = train_passes.from_pass(state.epochs_done * passes)
    val_batches = build_dataset(session.data.val, family.task, size, stage2.batch_size)
    with session.strategy.scope():
        model, backbone = build_stage2_model(session)
        unfrozen = unfreeze_top_blocks(backbone, stage2.unfreeze,
                                       train_batchnorm=stage2.batchnorm == "train")
        session.log(f"stage 2: {len(unfrozen)} backbone layers trainable (unfreeze={stage2.unfreeze}); "
                    f"BatchNorm {'trains' if stage2.batchnorm == 'train' else 'frozen'}")
        _compile(session, model, stage2.lr, steps, stage2.epochs)
        _restore_if_resuming(session, model, state)
    return fit_stage(session, model, state, train_batches, val_batches, stage2.epochs, steps, "stage2.lr",
                     evaluated_model=model)


# ---------------------------------------------------------------------------- shared


def passes_per_epoch(steps_per_pass: int, min_steps: int, stage: int,
                     log: Callable[[str], None]) -> tuple[int, int]:
    """`(passes, steps)` of one epoch: whole passes over the train set, at least `min_steps` steps.

    One pass over a dozen images is one or two steps; `ceil(min_steps / steps_per_pass)`
    passes (each a new shuffle and augmentation draw) make an epoch long enough for
    epoch-based settings (patience, warm-up, `eval.every`) to keep their meaning. Epoch e
    trains on passes `e * passes` to `(e + 1) * passes - 1`.
    """
    steps_per_pass = max(int(steps_per_pass), 1)
    if min_steps <= steps_per_pass:
        return 1, steps_per_pass
    passes = -(-min_steps // steps_per_pass)
    log(f"stage {stage}: the train set makes {steps_per_pass} batch{'es' if steps_per_pass > 1 else ''}; "
        f"an epoch repeats it {passes} times ({passes * steps_per_pass} steps, "
        f"stage{stage}.min_steps_per_epoch={min_steps})")
    return passes, passes * steps_per_pass


def _compile(session: TrainingSession, model: keras.Model, lr: float, steps: int, epochs: int) -> None:
    schedule = schedule_for_stage(session.config.schedule, lr, steps, epochs)
    model.compile(optimizer=build_optimizer(session.config, schedule),
                  **session.family.compile_kwargs(session.config.model.head))
    build_optimizer_slots(model)  # a stage-1 head may be a plain Keras model


def _restore_if_resuming(session: TrainingSession, model: keras.Model, state: RunState) -> None:
    """Loads the last checkpoint of the stage in progress (weights + optimizer state)."""
    if state.epochs_done == 0 or not state.last_checkpoint:
        return
    path = session.run_dir.checkpoint_dir / state.last_checkpoint
    if not model.optimizer.built:  # `_compile` builds it whenever every layer is built
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)  # the optimizer's slots included
    if session.config.ema.enabled:
        # Checkpoints hold the averages as the model's weights (training.ema): training
        # goes on from the raw weights, kept in the optimizer's average slots.
        swap_weights_with_averages(model.optimizer)
    session.log(f"stage {state.stage}: resumed from {path} after epoch {state.epochs_done} "
                f"(optimizer step {int(model.optimizer.iterations.numpy())})")


def _fit(session: TrainingSession, model: keras.Model, train_batches, val_batches, epochs: int,
         steps_per_epoch: int, initial_epoch: int, callbacks: list) -> None:
    if isinstance(session.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        if not model.optimizer.built:  # `_compile` builds it whenever every layer is built
            with session.strategy.scope():
                model.optimizer.build(model.trainable_variables)
        # Outside the scope: a callback that creates a variable (saving weights does) on the
        # chief alone must not start a collective the other workers never join.
        fit_multiworker(model, session.strategy, train_batches, val_batches, epochs, steps_per_epoch,
                        initial_epoch, callbacks, session.verbose)
        return
    model.fit(train_batches, validation_data=val_batches, epochs=epochs, steps_per_epoch=steps_per_epoch,
              initial_epoch=initial_epoch, callbacks=callbacks, verbose=session.verbose)


def fit_stage(session: TrainingSession, model: keras.Model, state: RunState, train_batches,
              val_batches, epochs: int, steps_per_epoch: int, lr_key: str,
              evaluated_model: keras.Model | None = None) -> RunState:
    """`fit` from `state.epochs_done` to `epochs` with the run's callbacks.

    `train_batches` is endless, starting at the first batch of epoch `state.epochs_done`
    (`first_pass`); an epoch is `steps_per_epoch` of them.

    `evaluated_model` (pixels in: the model itself in stage 2, the frozen backbone with
    the head being trained in stage 1): with `eval.every` set, the task's real metric on
    val is computed every N epochs, before the callbacks that log it, so early stopping
    and the best checkpoint can follow it (`early_stopping.monitor: val_coco_AP`).
    With `ema.enabled`, all of them see the averaged weights (`training.ema`).
    `session.extra_callbacks` (e.g. a tuning trial's pruning) run after the run's own,
    with the epoch's logs, task metric included.
    """
    run_dir, early = session.run_dir, session.config.early_stopping
    checkpoint = StageCheckpoint(run_dir, state, early.monitor, early.mode,
                                 patience=early.patience if early.enabled else None,
                                 min_delta=early.min_delta)
    nan_stop = NanLossStop()
    if run_dir.writable:
        truncate_metrics(run_dir.metrics_path, state.stage, state.epochs_done)
    averaging = AveragedWeightsAtEpochEnd() if session.config.ema.enabled else None
    callbacks = [averaging, nan_stop] if averaging else [nan_stop]
    if evaluated_model is not None and session.config.eval.every:
        callbacks.append(EvaluationCallback(session.data.val, session.family.task, session.image_size,
                                            every=session.config.eval.every,
                                            batch_size=session.config.eval.batch_size,
                                            model=evaluated_model, log=session.log))
    callbacks += [MetricsCsv(run_dir.metrics_path, state.stage, run_dir.writable), checkpoint]
    if run_dir.writable:
        callbacks.append(ScalarEventLog(run_dir.tensorboard_dir(state.stage)))
    callbacks += list(session.extra_callbacks)
    if averaging:
        callbacks.append(averaging.end_of_fit_guard())
    stopped_before = early.enabled and patience_used_up(state, early.patience)
    if state.epochs_done < epochs and not stopped_before:
        _fit(session, model, train_batches, val_batches, epochs, steps_per_epoch, state.epochs_done, callbacks)
    wait_for_all_workers(session.strategy)  # the chief's checkpoints exist for every worker
    if nan_stop.diverged_at is not None:
        raise diverged_error(nan_stop, state.stage, lr_key)
    if checkpoint.stopped_early:
        session.log(f"stage {state.stage}: early stopping after epoch {checkpoint.state.epochs_done} "
                    f"(best {early.monitor} {checkpoint.state.best_value:.4g} at epoch "
                    f"{checkpoint.state.best_epoch})")
    done = replace(checkpoint.state, stage_done=True)
    run_dir.write_state(done)
    return done


def check_monitor_is_logged(config: TrainConfig, task: str) -> None:
    """A task metric can be monitored only when it is computed after every epoch (before any work)."""
    monitor, every = config.early_stopping.monitor, config.eval.every
    task_metrics = [DEFAULT_PREFIX + name for name in LOGGED_METRICS[task]]
    if monitor in task_metrics and every != 1:
        raise ConfigError(f"early_stopping.monitor '{monitor}' is the task metric on val: it needs "
                          f"eval.every: 1 (got {every}), or monitor val_loss")


def final_model(session: TrainingSession, last_stage: int) -> keras.Model:
    """A fresh, uncompiled model holding the best weights of `last_stage` (1 or 2)."""
    model, _ = build_stage2_model(session)
    if last_stage == 2:
        best = session.run_dir.best_checkpoint(2)
        model.load_weights(best)
    return model


def evaluate_model(session: TrainingSession, model: keras.Model) -> dict[str, Any]:
    batches = build_eval_dataset(session.data.val, session.family.task, session.image_size,
                                 session.config.stage2.batch_size, with_targets=True)
    return session.family.evaluate(model, batches, session.data.label_map, session.data.val)
