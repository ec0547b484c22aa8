"""SavedModel export time: the textbook `tf.saved_model.save` against detseg's export.

    .venv/bin/python benchmarks/export_time.py --out runs/bench_export_time            # ~6 min
    .venv/bin/python benchmarks/export_time.py --families yolo --repeats 1 --out runs/bench_export_time_yolo

The textbook way (TensorFlow's SavedModel guide): the serving module holds the Keras model,
its signatures are traced to concrete functions, and `tf.saved_model.save` runs with default
options. Profiled on our YOLO, most of that time went to three things detseg's export
(`serving.export.export_saved_model` of a `serving.serving_module.serving_module_for`
module) no longer does:

1. tracing and storing the gradient function of every custom-gradient op
   (`SaveOptions.experimental_custom_gradients`, on by default): a served model is never
   differentiated, so `EXPORT_OPTIONS` turns it off;
2. walking every Keras layer's attributes for functions and children (the module tracks
   the model's variables only);
3. tracing the model twice per signature: once before the save and again inside it (the
   save context is part of the trace key), and once per signature (both signatures now
   call one traced `serve_frame`).

For each `--families` entry its smoke config's model (`configs/smoke/<family>.yaml`: tiny
backbone, 64 px, random weights) is exported both ways, each export in a fresh Python
process (TensorFlow caches traced functions: a second export in the same process would be
cheaper), `--repeats` times, alternating. Reported per family and way: process CPU seconds
from building the signatures to the end of the save, of `tf.saved_model.load`, the size of
saved_model.pb, and whether both exports serve the same outputs on the same image (max
absolute difference of every numeric output of `serving_pixels`; labels must be equal).
Ratios: textbook / detseg CPU-s.

Writes `--out/results.json` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from detseg.core.atomic_files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("tf_default", "detseg")  # the textbook save, detseg's export
CLASS_NAMES = ["circle", "rectangle", "triangle"]


def child(family: str, option: str, out: Path) -> dict:
    """One save and load of `family`'s smoke model in this (fresh) process."""
    import keras
    import numpy as np
    import tensorflow as tf

    from detseg.core.contract import BACKGROUND_NAME, SEMANTIC
    from detseg.serving.export import export_saved_model
    from detseg.serving.serving_module import PIXELS_SIGNATURE, ServingModule, serving_module_for
    from detseg.training.config import load_config
    from detseg.training.families import FAMILIES
    from detseg.training.transfer_stages import build_task_model

    config = load_config(REPO / "configs" / "smoke" / f"{family}.yaml")
    keras.utils.set_random_seed(config.seed)
    model, _ = build_task_model(config, FAMILIES[family], len(CLASS_NAMES))
    task, size = FAMILIES[family].task, config.model.image_size
    start = time.process_time()
    if option == "detseg":
        out = export_saved_model(serving_module_for(model, task, size, CLASS_NAMES), out, write_config=False)
    else:  # the textbook way: the Keras model tracked, concrete signatures, default options
        labels = [BACKGROUND_NAME, *CLASS_NAMES] if task == SEMANTIC else CLASS_NAMES  # as serving_module_for
        module = ServingModule(lambda pixels: model.predict_step(pixels), task=task, letterbox=size,
                               label_names=labels, trackables=[model])
        signatures = {name: function.get_concrete_function() for name, function in module.signatures().items()}
        tf.saved_model.save(module, str(out), signatures=signatures)
    save_cpu = time.process_time() - start
    start = time.process_time()
    loaded = tf.saved_model.load(str(out))
    load_cpu = time.process_time() - start
    pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    outputs = loaded.signatures[PIXELS_SIGNATURE](tf.constant(pixels))
    np.savez(out / "outputs.npz", **{name: value.numpy() for name, value in outputs.items()})
    return {"save_cpu_s": save_cpu, "load_cpu_s": load_cpu, "out": str(out),
            "pb_bytes": (out / "saved_model.pb").stat().st_size}


def run_child(family: str, option: str, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", family, option, str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"export of {family} with {option} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def max_output_difference(first: Path, second: Path) -> float:
    """Largest absolute difference over every numeric output; inf if any label differs."""
    import numpy as np

    a, b = (np.load(path / "outputs.npz", allow_pickle=True) for path in (first, second))
    assert sorted(a.files) == sorted(b.files), (a.files, b.files)
    worst = 0.0
    for key in a.files:
        x, y = a[key], b[key]
        if x.shape != y.shape:
            return float("inf")
        if x.dtype.kind in "biuf" and x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
        elif x.dtype.kind not in "biuf" and not np.array_equal(x, y):
            return float("inf")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="yolo,ssd,faster_rcnn,mask_rcnn,unet,fcn,clsloc")
    parser.add_argument("--repeats", type=int, default=2, help="saves per family and option")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_export_time"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        family, option, out = args.child
        print(json.dumps(child(family, option, Path(out))))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        runs = {option: [] for option in OPTIONS}
        for repeat in range(args.repeats):
            for option in OPTIONS:
                out = args.out / "exports" / f"{family}_{option}_{repeat}"
                shutil.rmtree(out, ignore_errors=True)
                runs[option].append(run_child(family, option, out))
        difference = max_output_difference(Path(runs["tf_default"][0]["out"]), Path(runs["detseg"][0]["out"]))
        summary = {option: {key: statistics.median(run[key] for run in runs[option])
                            for key in ("save_cpu_s", "load_cpu_s", "pb_bytes")} for option in OPTIONS}
        summary["save_ratio"] = summary["tf_default"]["save_cpu_s"] / summary["detseg"]["save_cpu_s"]
        summary["load_ratio"] = summary["tf_default"]["load_cpu_s"] / summary["detseg"]["load_cpu_s"]
        summary["max_output_difference"] = difference
        summary["runs"] = runs
        results[family] = summary
        write_json_atomic(results, args.out / "results.json")
        print(f"{family}: save {summary['tf_default']['save_cpu_s']:.1f} -> {summary['detseg']['save_cpu_s']:.1f} "
              f"CPU-s ({summary['save_ratio']:.2f}x)", flush=True)

    print(f"\nmedian of {args.repeats} fresh processes per cell; CPU-s = process time (all threads)\n")
    print("| family | save CPU-s, textbook | save CPU-s, detseg | ratio | load CPU-s, textbook | "
          "load CPU-s, detseg | ratio | saved_model.pb, textbook -> detseg | outputs max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for family, s in results.items():
        d, o = s["tf_default"], s["detseg"]
        print(f"| {family} | {d['save_cpu_s']:.1f} | {o['save_cpu_s']:.1f} | {s['save_ratio']:.2f}x | "
              f"{d['load_cpu_s']:.2f} | {o['load_cpu_s']:.2f} | {s['load_ratio']:.2f}x | "
              f"{d['pb_bytes'] / 1e6:.1f} MB -> {o['pb_bytes'] / 1e6:.1f} MB | {s['max_output_difference']:.1e} |")


if __name__ == "__main__":
    main()
