"""Training-step efficiency: effective GFLOP/s of each model's step against this machine's matmul ceiling.

    .venv/bin/python benchmarks/training_efficiency.py --out runs/bench_efficiency        # ~6 min on 2 cores
    .venv/bin/python benchmarks/training_efficiency.py --models yolo --families none --steps 5   # a quick look

The ceiling: a float32 2048x2048 matmul (`tf.linalg.matmul` in a `tf.function`, all
cores), 2 n^3 FLOPs per call, median of `--steps` calls after two warm-ups.

Each model: its FORWARD FLOPs are counted by TensorFlow's profiler on the traced forward
graph at the step's batch shape (Conv2D, depthwise conv, MatMul, BiasAdd and the other ops
TensorFlow registers FLOPs for); a training step is counted as 3x the forward (the backward
pass computes the gradients of both a layer's input and its weights, each as many FLOPs as
the forward). Then the model's real training step (its compiled train function, as `fit` runs it, the
model's own loss and Adam) is timed on one fixed batch: median wall and process CPU seconds
of `--steps` steps after `--warmup` untimed ones. Effective GFLOP/s = counted step FLOPs
/ median wall seconds, and its fraction of the ceiling.

Where a step's time goes (`--models`, the detectors): the same batch through
(1) the network's forward pass alone (training=True), (2) forward + backward of the
network to its weights with a loss that is just the sum of its raw outputs (the least
any step must do), and (3) the model's own loss alone on fixed raw outputs (assignment
and losses, no network), each a `tf.function` timed like the step. The step minus (2)
is what the loss, its gradient, the optimizer update and Keras' step machinery add.

Where the op time goes (`--profile`, default the two YOLOs): TensorFlow's profiler traces
`--steps` steps; every op's time (summed over threads) goes to a category by its type and
name: convolutions (forward / gradient), BatchNorm (ops under a `*_bn*` / `batch_norm` /
`moments` name; forward / gradient), the loss and target assignment (ops outside the
model's own name scope), the optimizer, and the model's other ops.

Two experiments on our YOLO, each against the plain model in the same run:
- `yolo_fused_bn` (a `--models` entry): every BatchNormalization built as
  `FusedBatchNormalization` below, TensorFlow's fused kernel (one op forward and one
  backward instead of Keras 3's 5-8 elementwise ops); same weights and results.
- `--onednn`: the same YOLO step in child processes with `TF_ENABLE_ONEDNN_OPTS` 0 and 1,
  taking turns (`--onednn` rounds each); TensorFlow leaves oneDNN's kernels off by default
  on CPUs without AVX-512 (this AMD EPYC), and the variable must be set before TF loads.

`--models` are `benchmarks/detectors.py`'s builders (our YOLO and SSD, keras-cv's YOLOv8:
tiny backbone width 2 / keras-cv's small backbone, `--image-size` px, batch
`--batch-size`, every layer training); `--families` are the smoke configs of
`training.families.FAMILIES` as `benchmarks/mixed_precision.py` builds them (tiny
backbone, width 2). One synthetic batch per task. Writes `--out/results.json` and prints
the table.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
# TensorFlow loads with oneDNN as the environment says (TF_ENABLE_ONEDNN_OPTS, unset: TF's
# own default for the CPU): the table says which.

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from detectors import BUILDERS  # noqa: E402
from learning_curves import log, parse_list  # noqa: E402
from mixed_precision import compiled_model, cpu_flags, cpu_seconds, fixed_batch  # noqa: E402
from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.training.config import load_config  # noqa: E402
from detseg.training.families import FAMILIES  # noqa: E402

MATMUL_SIDE = 2048
BACKWARD_FACTOR = 3.0  # a training step's FLOPs as a multiple of the forward's
EXPERIMENT_MODELS = ("yolo_fused_bn",)
WRAPPER_EVENTS = ("ExecutorState", "EagerLocalExecute", "KernelAndDeviceFunc")
BATCHNORM_NAMES = ("_bn", "batch_norm", "batchnorm", "moments")
OPTIMIZER_NAMES = ("adam", "optimizer", "clip", "ResourceApply", "AssignVariableOp", "AssignAddVariableOp")


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization on TF's fused kernel for NHWC, channel-last, scale+center, no mask;
    Keras's path otherwise. The moving variance takes the biased batch variance, as Keras's
    does (the kernel returns the unbiased one)."""

    def call(self, inputs, training=None, mask=None):
        if mask is not None or len(inputs.shape) != 4 or self.axis not in (3, -1) or not (self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        if training and self.trainable:
            y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x, self.gamma, self.beta, epsilon=self.epsilon,
                                                                 is_training=True)
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + unbiased * (count - 1.0) / count * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, self.gamma, self.beta, mean=self.moving_mean,
                                                       variance=self.moving_variance, epsilon=self.epsilon,
                                                       is_training=False)
        return tf.cast(y, self.compute_dtype)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="yolo,yolo_fused_bn,kerascv_yolov8",
                        help=f"comma list of benchmarks/detectors.py models {tuple(BUILDERS)} and "
                             f"{EXPERIMENT_MODELS}, or 'none'")
    parser.add_argument("--profile", default="yolo,kerascv_yolov8",
                        help="comma list of --models whose op time is profiled by category, or 'none'")
    parser.add_argument("--onednn", type=int, default=2, metavar="ROUNDS",
                        help="rounds of the oneDNN off/on comparison of our YOLO's step (child processes; 0: skip)")
    parser.add_argument("--child-onednn-step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="comma list of families (smoke configs, tiny backbone), or 'none'")
    parser.add_argument("--image-size", type=int, default=256, help="model input side, px (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--alpha", type=float, default=2.0, help="tiny backbone width (default 2)")
    parser.add_argument("--yolo-neck", default="64,128,256", help="our YOLO's neck widths (as detectors.py)")
    parser.add_argument("--backbone", default="tiny", help="backbone of our detectors (as detectors.py)")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement (median; default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first, tracing included (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_efficiency"))
    args = parser.parse_args(argv)
    args.models = [] if args.models == "none" else parse_list(args.models)
    args.profile = [] if args.profile == "none" else parse_list(args.profile)
    args.families = [] if args.families == "none" else parse_list(args.families)
    if unknown := [m for m in args.models if m not in (*BUILDERS, *EXPERIMENT_MODELS)]:
        parser.error(f"--models: unknown {unknown}; choose from {(*BUILDERS, *EXPERIMENT_MODELS)}")
    if unknown := [f for f in args.families if f not in FAMILIES]:
        parser.error(f"--families: unknown {unknown}; choose from {tuple(FAMILIES)}")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")
    return args


def timed(call, steps: int, warmup: int) -> dict:
    """Median wall and process-CPU seconds of `call()` (which must block until done)."""
    for _ in range(warmup):
        call()
    walls, cpus = [], []
    for _ in range(steps):
        wall, cpu = time.perf_counter(), cpu_seconds()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return {"wall_s": round(statistics.median(walls), 5), "cpu_s": round(statistics.median(cpus), 5)}


def matmul_ceiling(steps: int) -> dict:
    """GFLOP/s of a float32 `MATMUL_SIDE`-square matmul on every core."""
    a = tf.random.uniform([MATMUL_SIDE, MATMUL_SIDE], seed=1)
    b = tf.random.uniform([MATMUL_SIDE, MATMUL_SIDE], seed=2)
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    t = timed(lambda: matmul().numpy(), max(steps, 5), 2)
    return {**t, "gflop_per_s": round(2 * MATMUL_SIDE ** 3 / t["wall_s"] / 1e9, 1)}


def forward_flops(model: keras.Model, x) -> float | None:
    """FLOPs of one forward pass (training=True) at `x`'s shape, counted by TF's profiler on
    the traced graph (None when the model cannot be traced with a fixed shape)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    try:
        graph = tf.function(lambda images: model(images, training=True)).get_concrete_function(
            tf.TensorSpec(x.shape, x.dtype)).graph
        options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()
                                                      ).with_empty_output().build()
        return float(model_analyzer.profile(graph, options=options).total_float_ops)
    except Exception as error:  # noqa: BLE001 - a model the profiler cannot walk gets "n/a"
        log(f"  FLOPs not counted: {type(error).__name__}: {str(error)[:200]}")
        return None


def total_of(structure) -> tf.Tensor:
    """The float32 sum of every tensor in a (nested) structure: a scalar that depends on all of it."""
    return tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in tf.nest.flatten(structure) if v is not None])


def step_parts(model: keras.Model, x, y, steps: int, warmup: int) -> dict:
    """The forward, forward+backward and loss-only timings of the module docstring."""
    variables = model.trainable_variables

    @tf.function
    def forward():
        return total_of(model(x, training=True))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            total = total_of(model(x, training=True))
        return total_of(tape.gradient(total, variables))

    raw = model(x, training=True)
    raw = tf.nest.map_structure(tf.identity, raw)

    @tf.function
    def loss_only():
        return total_of(model.compute_loss(x, y, raw, training=True))

    parts = {"forward": timed(lambda: forward().numpy(), steps, warmup),
             "forward_backward": timed(lambda: forward_backward().numpy(), steps, warmup)}
    try:
        parts["loss_only"] = timed(lambda: loss_only().numpy(), steps, warmup)
    except Exception as error:  # noqa: BLE001 - reported, not fatal: a model whose loss needs more
        log(f"  loss alone not timed: {type(error).__name__}: {str(error)[:200]}")
    return parts


def train_step_call(model: keras.Model, x, y):
    """One step of the model's own compiled train function on the fixed batch `(x, y)`, as
    `fit` runs it (keras-cv's `train_step` takes `(x, y)` only, which `train_on_batch` does
    not give it); the call returns when the loss is read back."""
    one_batch = tf.data.Dataset.from_tensors((x, y))
    model.fit(one_batch, verbose=0)  # builds the optimizer and the train function, as fit does
    batches, train_function = iter(one_batch.repeat()), model.train_function

    def step() -> float:
        logs = train_function(batches)
        logs = logs.get_value() if isinstance(logs, tf.experimental.Optional) else logs
        return float(logs["loss"])

    return step


def measure(name: str, model: keras.Model, x, y, args, ceiling: float, parts: bool, profile: bool = False) -> dict:
    log(f"{name}: {model.count_params():,} parameters")
    flops = forward_flops(model, x)
    step_call = train_step_call(model, x, y)
    step = timed(step_call, args.steps, args.warmup)
    result = {"parameters": int(model.count_params()), "forward_gflop": None if flops is None else flops / 1e9,
              "step": step, "img_per_s": round(args.batch_size / step["wall_s"], 1)}
    if flops is not None:
        effective = BACKWARD_FACTOR * flops / step["wall_s"] / 1e9
        result.update(effective_gflop_per_s=round(effective, 1), of_ceiling=round(effective / ceiling, 3))
    if parts:
        result["parts"] = step_parts(model, x, y, args.steps, args.warmup)
    if profile:
        result["op_cpu_s"] = op_categories(model, step_call, args.steps)
    log(f"  {result}")
    return result


def detector_model(args, name: str, num_classes: int, class_names) -> keras.Model:
    builder_args = argparse.Namespace(image_size=args.image_size, alpha=args.alpha, backbone=args.backbone,
                                      yolo_neck=args.yolo_neck)
    if name == "yolo_fused_bn":  # our layers look the class up when they are built
        plain, keras.layers.BatchNormalization = keras.layers.BatchNormalization, FusedBatchNormalization
        try:
            model, _ = BUILDERS["yolo"](builder_args, num_classes, class_names, 1e-3)
        finally:
            keras.layers.BatchNormalization = plain
        return model
    model, _ = BUILDERS[name](builder_args, num_classes, class_names, 1e-3)
    return model


def op_categories(model: keras.Model, step, steps: int) -> dict[str, float]:
    """CPU-seconds per step of each op category (module docstring), from a profiler trace of `steps` steps."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]).read_bytes())
    totals: collections.Counter = collections.Counter()
    scope = f"{model.name}/"
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith(WRAPPER_EVENTS):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                totals[op_category(op_name, op_type, scope)] += event.duration_ps / 1e12 / steps
    return {key: round(value, 4) for key, value in totals.most_common()}


def op_category(op_name: str, op_type: str, scope: str) -> str:
    direction = "gradient" if "gradient_tape" in op_name else "forward"
    lowered = op_name.lower()
    if op_type.startswith(("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D")):
        return f"conv {direction}"
    if any(part in lowered for part in BATCHNORM_NAMES) or op_type.startswith("FusedBatchNorm"):
        return f"batchnorm {direction}"
    if any(part.lower() in lowered or part == op_type for part in OPTIMIZER_NAMES):
        return "optimizer"
    if scope not in op_name:
        return "loss + assignment"
    return f"other layers {direction}"


def onednn_child(args) -> None:
    """Child process of `--onednn`: our YOLO's step time under this process's TF_ENABLE_ONEDNN_OPTS, as JSON."""
    from tensorflow.python.util import _pywrap_util_port

    x, y, num_classes = fixed_batch(argparse.Namespace(batch_size=args.batch_size, image_size=args.image_size),
                                    "detection", args.out / f"synthetic_{args.image_size}")
    keras.utils.set_random_seed(0)
    model = detector_model(args, "yolo", num_classes, [f"c{i}" for i in range(num_classes)])
    step = timed(train_step_call(model, x, y), args.steps, args.warmup)
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), **step}))


def onednn_comparison(args) -> dict:
    """Our YOLO's step with oneDNN off and on, child processes taking turns (`args.onednn` rounds)."""
    command = [sys.executable, __file__, "--child-onednn-step", "--image-size", str(args.image_size),
               "--batch-size", str(args.batch_size), "--alpha", str(args.alpha), "--yolo-neck", args.yolo_neck,
               "--backbone", args.backbone, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--out", str(args.out)]
    runs: dict[str, list] = {"0": [], "1": []}
    for round_index in range(args.onednn):
        for setting in (("0", "1") if round_index % 2 == 0 else ("1", "0")):
            done = subprocess.run(command, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting},
                                  capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
            log(f"  oneDNN {setting}: {runs[setting][-1]}")
    off = statistics.median(r["wall_s"] for r in runs["0"])
    on = statistics.median(r["wall_s"] for r in runs["1"])
    return {"runs": runs, "off_wall_s": off, "on_wall_s": on, "on_speedup": round(off / on, 3),
            "on_cpu_ratio": round(statistics.median(r["cpu_s"] for r in runs["1"])
                                  / statistics.median(r["cpu_s"] for r in runs["0"]), 3)}


def family_model(args, family: str, num_classes: int) -> keras.Model:
    config = load_config(f"smoke/{family}", [f"model.image_size={args.image_size}", f"model.alpha={args.alpha}"])
    return compiled_model(config, num_classes)


def table(results: dict) -> str:
    ceiling = results["ceiling"]["gflop_per_s"]
    lines = [f"ceiling: float32 {MATMUL_SIDE}x{MATMUL_SIDE} matmul, {ceiling} GFLOP/s; "
             f"batch {results['batch_size']}, {results['image_size']} px; "
             f"oneDNN {'on' if results.get('onednn_in_process') else 'off'} in this process",
             "| model | params | forward GFLOP/batch | step s (wall) | img/s | effective GFLOP/s | of ceiling | "
             "forward s | forward+backward s | loss alone s | step - (forward+backward) |", "|---" * 11 + "|"]
    for name, r in results["models"].items():
        parts = r.get("parts", {})
        fb = parts.get("forward_backward", {}).get("wall_s")
        cell = lambda key: f"{parts[key]['wall_s']:.3f}" if key in parts else "-"  # noqa: E731
        overhead = f"{r['step']['wall_s'] - fb:.3f} ({(r['step']['wall_s'] - fb) / r['step']['wall_s']:.0%})" \
            if fb is not None else "-"
        gflop = "n/a" if r["forward_gflop"] is None else f"{r['forward_gflop']:.2f}"
        lines.append(f"| {name} | {r['parameters']:,} | {gflop} | {r['step']['wall_s']:.3f} | {r['img_per_s']} | "
                     f"{r.get('effective_gflop_per_s', 'n/a')} | {r.get('of_ceiling', 'n/a')} | "
                     f"{cell('forward')} | {cell('forward_backward')} | {cell('loss_only')} | {overhead} |")
    return "\n".join(lines)


def profile_table(results: dict) -> str:
    profiled = {name: r["op_cpu_s"] for name, r in results["models"].items() if "op_cpu_s" in r}
    if not profiled:
        return ""
    categories = sorted({c for cats in profiled.values() for c in cats}, key=lambda c: -max(
        cats.get(c, 0.0) for cats in profiled.values()))
    lines = ["", "Op CPU-seconds per step by category (profiler; summed over threads) and share:",
             "| category | " + " | ".join(profiled) + " |", "|---" * (len(profiled) + 1) + "|"]
    for category in categories:
        cells = []
        for cats in profiled.values():
            total = sum(cats.values())
            value = cats.get(category, 0.0)
            cells.append(f"{value:.3f} ({value / total:.0%})")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| total | " + " | ".join(f"{sum(c.values()):.3f}" for c in profiled.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child_onednn_step:
        onednn_child(args)
        return None
    from tensorflow.python.util import _pywrap_util_port

    results = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "cpu": cpu_flags(),
               "onednn_in_process": bool(_pywrap_util_port.IsMklEnabled()),
               "cores": os.cpu_count(), "image_size": args.image_size, "batch_size": args.batch_size,
               "load_average_before": os.getloadavg(), "models": {}}
    results["ceiling"] = matmul_ceiling(args.steps)
    ceiling = results["ceiling"]["gflop_per_s"]
    log(f"matmul ceiling: {ceiling} GFLOP/s")
    path = args.out / "results.json"
    data_dir = args.out / f"synthetic_{args.image_size}"
    batch_args = argparse.Namespace(batch_size=args.batch_size, image_size=args.image_size)
    if args.models:
        x, y, num_classes = fixed_batch(batch_args, "detection", data_dir)
        names = [f"c{i}" for i in range(num_classes)]
        for name in args.models:
            keras.utils.set_random_seed(0)
            results["models"][name] = measure(name, detector_model(args, name, num_classes, names), x, y, args,
                                              ceiling, parts=True, profile=name in args.profile)
            keras.backend.clear_session()
            write_json_atomic(results, path)
    for family in args.families:
        x, y, num_classes = fixed_batch(batch_args, FAMILIES[family].task, data_dir)
        keras.utils.set_random_seed(0)
        results["models"][f"{family} (smoke config)"] = measure(family, family_model(args, family, num_classes), x,
                                                                y, args, ceiling, parts=False)
        keras.backend.clear_session()
        write_json_atomic(results, path)
    if args.onednn:
        log("oneDNN off / on, our YOLO's step in child processes")
        results["onednn"] = onednn_comparison(args)
    results["load_average_after"] = os.getloadavg()
    write_json_atomic(results, path)
    print(table(results))
    print(profile_table(results))
    if "onednn" in results:
        o = results["onednn"]
        print(f"\noneDNN (TF_ENABLE_ONEDNN_OPTS), our YOLO's step: off {o['off_wall_s']:.3f} s, on {o['on_wall_s']:.3f} s "
              f"(medians of {args.onednn} child runs each): **{o['on_speedup']:.2f}x** faster on; "
              f"CPU-s on/off {o['on_cpu_ratio']:.2f}")
    print(f"\nwrote {path}; load average before {results['load_average_before']}, "
          f"after {results['load_average_after']}")
    return results


if __name__ == "__main__":
    main()
