"""Exported SavedModel throughput, our YOLO vs keras-cv's YOLOv8 side by side, and where our graph spends time.

    .venv/bin/python benchmarks/exported_detectors.py --out runs/bench_exported_detectors   # 256 px, 100 steps each
    .venv/bin/python benchmarks/exported_detectors.py --image-size 128 --train-steps 5 --rounds 2 \\
        --out /tmp/bench_exp_quick                                  # smoke run: 2.3 min on 2 busy cores

Both models are built as `benchmarks/detectors.py` builds them (`build_ours_yolo`: tiny
backbone, `--alpha`, neck `--yolo-neck`; `build_kerascv_yolov8`: its YOLOV8Backbone
[32, 64, 128, 256] x [1, 2, 2, 1], fpn_depth 1) at `--image-size`, and trained briefly
(`--train-steps` steps of `--batch-size` from the synthetic shapes set of
`data.synthetic.ensure_synthetic`, the `pipelines` detection pipeline, Adam at each model's
usual peak lr, 3% linear warm-up then cosine) so the scores going into NMS look like a
trained model's, not random weights'. `--train-steps 0` skips training.

Each is then exported as a SavedModel whose `serving_default` takes a batch of encoded
images (`tf.string [None]`):
- ours exactly as the project ships it: `serving.serving_module.serving_module_for` +
  `serving.export.export_saved_model` (in-graph decode, letterbox, `predict_step` = forward,
  box decoding, class-aware `tf.image.combined_non_max_suppression`; boxes back to original
  pixels, valid-first ordering, class names looked up from the labels asset);
- keras-cv's as an equivalent `tf.Module` (`KerasCvServingModule`): the same decode and
  letterbox function as ours (`serving.serving_module.decode_and_letterbox`), the keras-cv model,
  then ITS OWN decode path, `YOLOV8Detector.decode_predictions` (DFL expectation, anchors,
  strides) with its `prediction_decoder`, a `keras_cv.layers.NonMaxSuppression`
  (class-agnostic: max class score, `tf.image.non_max_suppression_padded`), then boxes back
  to original pixels with our `boxes_to_original` (no class-name lookup).
Both use the same NMS settings, detectors.py's `EVAL_NMS` unless overridden (IoU 0.6,
score/confidence threshold 0.001, 100 detections), and both are saved with
`serving.export.EXPORT_OPTIONS` (no gradient functions; save time only, the forward graph
is the same) and loaded with `serving.export.load_saved_model`; each module tracks only
its model's variables, not the Keras model.

Throughput: both loaded signatures are called in-process on the SAME `--jpegs` 640 x 480
JPEGs (val images of the synthetic set, resized and encoded at quality 90), at batch 1 and
16; `--warmup` calls each, then `--rounds` rounds in which each model runs
`--images-per-round` images (the two alternate within a round, and alternate who goes first
from round to round), so load from elsewhere hits both alike. Reported: median img/s over
rounds, median CPU-seconds per image (`resource.getrusage`, all threads), and ours / theirs.
A sanity check prints detections per image (all, and with score >= 0.25) beside the true
object count.

Profile: each stage of OUR exported path is a `tf.function` of the project's own functions
on the same inputs, timed round-robin (`--profile-repeats`, medians) at batch 1 and 16:
JPEG decode, letterbox (`letterbox_image` per image), forward pass, box decoding
(`YoloDetector.boxes_and_scores`: `decode` before its NMS), NMS
(`batched_nms`), output formatting (`serving.task_outputs.served_outputs`); beside them the
whole in-process `serving_default`, the whole loaded signature, and the loaded
`serve_frame` (everything but decode + letterbox, from the export). keras-cv's forward,
box decoding and NMS are timed the same way for comparison. The split stages are checked
against `model.decode` / `decode_predictions` (same outputs). Writes `--out/results.json`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from detectors import AUGMENTS, EVAL_NMS, build_kerascv_yolov8, build_ours_yolo  # noqa: E402
from learning_curves import log, warmup_cosine  # noqa: E402
from mixed_precision import cpu_seconds  # noqa: E402
from detseg.core.atomic_files import write_json_atomic  # noqa: E402
from detseg.core.contract import DETECTION, PAD_CLASS  # noqa: E402
from detseg.data.coco import load_coco  # noqa: E402
from detseg.data.synthetic import ensure_synthetic  # noqa: E402
from detseg.models.ops.letterbox import boxes_to_original, letterbox_image  # noqa: E402
from detseg.models.ops.nms import NmsConfig, batched_nms  # noqa: E402
from detseg.pipelines.dataset import build_dataset  # noqa: E402
from detseg.serving.export import EXPORT_OPTIONS, export_saved_model, load_saved_model  # noqa: E402
from detseg.serving.serving_module import decode_and_letterbox, serving_module_for  # noqa: E402
from detseg.serving.task_outputs import served_outputs  # noqa: E402

OURS, THEIRS = "yolo", "kerascv_yolov8"
LRS = {OURS: 2e-3, THEIRS: 4e-3}
SHOWN_SCORE = 0.25  # the sanity check's "confident" detections
STAGES = ("jpeg_decode", "letterbox", "forward", "box_decode", "nms", "format")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--image-size", type=int, default=256, help="model input (letterbox) size S (default 256)")
    add("--train-steps", type=int, default=100, help="training steps per model before export; 0: untrained")
    add("--batch-size", type=int, default=16, help="training batch size (default 16)")
    add("--lr-ours", type=float, default=LRS[OURS], help=f"peak Adam lr of our YOLO (default {LRS[OURS]:g})")
    add("--lr-theirs", type=float, default=LRS[THEIRS], help=f"peak Adam lr of keras-cv's (default {LRS[THEIRS]:g})")
    add("--augment", default="default", choices=tuple(AUGMENTS), help="training augmentation (detectors.py's)")
    add("--backbone", default="tiny", help="our YOLO's backbone (default tiny)")
    add("--alpha", type=float, default=2.0, help="its width multiplier (default 2)")
    add("--yolo-neck", default="64,128,256", help="our neck widths P3,P4,P5 (default 64,128,256)")
    add("--iou-threshold", type=float, default=EVAL_NMS.iou_threshold, help="NMS IoU threshold, both models")
    add("--score-threshold", type=float, default=EVAL_NMS.score_threshold,
        help="NMS score (keras-cv: confidence) threshold, both models")
    add("--max-detections", type=int, default=EVAL_NMS.max_detections, help="detections kept per image, both")
    add("--jpegs", type=int, default=16, help="640x480 JPEGs made from val images (default 16)")
    add("--batches", default="1,16", help="comma list of batch sizes timed (default 1,16)")
    add("--rounds", type=int, default=7, help="timed rounds per batch size; medians over them (default 7)")
    add("--images-per-round", type=int, default=32, help="images each model runs per round (default 32)")
    add("--warmup", type=int, default=3, help="untimed calls per model and batch size first (default 3)")
    add("--profile-repeats", type=int, default=15, help="timed calls per profiled stage (default 15)")
    add("--num-images", type=int, default=600, help="synthetic images (70%% train, 15%% val; default 600)")
    add("--source-size", type=int, default=256, help="synthetic image size on disk (default 256)")
    add("--data-dir", default="runs/synthetic/bench_detectors", help="synthetic set (shared with detectors.py)")
    add("--out", type=Path, default=Path("runs/bench_exported_detectors"),
        help="results.json and exports/ go here (exports/ is replaced)")
    add("--seed", type=int, default=0, help="weights, data order (default 0)")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    return args


# ----------------------------------------------------------------------------- models


class WarmupCosine(keras.callbacks.Callback):
    """The harness's schedule (`learning_curves.warmup_cosine`) over a fixed number of steps."""

    def __init__(self, peak_lr: float, steps: int):
        super().__init__()
        self.peak_lr, self.steps = peak_lr, steps

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(warmup_cosine(self.peak_lr, batch / self.steps))


def train_briefly(model: keras.Model, train, lr: float, args) -> dict:
    if args.train_steps <= 0:
        return {"steps": 0}
    batches = build_dataset(train, "detection", args.image_size, args.batch_size, augment=AUGMENTS[args.augment],
                            shuffle=True, seed=args.seed, repeat=True, drop_remainder=True)
    cpu, wall = time.process_time(), time.perf_counter()
    history = model.fit(batches, epochs=1, steps_per_epoch=args.train_steps, verbose=0,
                        callbacks=[WarmupCosine(lr, args.train_steps)])
    return {"steps": args.train_steps, "lr": lr, "final_loss": round(float(history.history["loss"][-1]), 4),
            "cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1)}


def kerascv_boxes(model, raw: dict, size: int):
    """The first half of `YOLOV8Detector.decode_predictions` (its own functions): xyxy frame boxes, scores."""
    from keras_cv.src.models.object_detection.yolo_v8 import yolo_v8_detector as kcv

    points, strides = kcv.get_anchors(image_shape=(size, size, 3))
    return kcv.dist2bbox(kcv.decode_regression_to_boxes(raw["boxes"]), points) * strides[:, None], raw["classes"]


def kerascv_outputs(detections: dict, transforms: dict) -> dict:
    """keras-cv's NMS output (-1 padding) -> boxes in original pixels, padding as ours (0, 0, PAD_CLASS)."""
    count = tf.cast(detections["num_detections"], tf.int32)
    valid = tf.range(tf.shape(detections["boxes"])[1])[tf.newaxis] < count[:, tf.newaxis]
    boxes = boxes_to_original(detections["boxes"], transforms) * tf.cast(valid, tf.float32)[..., tf.newaxis]
    return {"boxes": boxes, "scores": tf.where(valid, tf.cast(detections["confidence"], tf.float32), 0.0),
            "classes": tf.where(valid, tf.cast(detections["classes"], tf.int32), PAD_CLASS), "num_detections": count}


class KerasCvServingModule(tf.Module):
    """keras-cv's YOLOv8 exported like ours: encoded images -> decode, letterbox, model, its decode + NMS."""

    def __init__(self, model: keras.Model, size: int):
        super().__init__(name="kerascv_serving")
        self.size = size
        self.model_variables = list(model.variables)  # tracked; the Keras model itself is not (as ours)
        self._detect = lambda pixels: model.decode_predictions(model(pixels, training=False), pixels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")], autograph=False)
    def serving_default(self, images):
        pixels, transforms = decode_and_letterbox(images, self.size)
        return kerascv_outputs(self._detect(pixels), transforms)


def build_and_export(name: str, train, names, args) -> tuple[keras.Model, object, Path, dict]:
    """Build, train briefly, export; returns (model, our in-process module or None, version dir, record)."""
    keras.utils.set_random_seed(args.seed)
    nms = NmsConfig(args.iou_threshold, args.score_threshold, args.max_detections)
    if name == OURS:
        model, _ = build_ours_yolo(args, len(names), names, args.lr_ours)
        model.nms_config = nms  # what YoloDetector.decode reads (built with EVAL_NMS)
    else:
        import keras_cv

        model, _ = build_kerascv_yolov8(args, len(names), names, args.lr_theirs)
        model.prediction_decoder = keras_cv.layers.NonMaxSuppression(
            bounding_box_format="xyxy", from_logits=False, iou_threshold=nms.iou_threshold,
            confidence_threshold=nms.score_threshold, max_detections=nms.max_detections)
    log(f"[{name}] {model.count_params():,} parameters; training {args.train_steps} steps")
    record = {"params": int(model.count_params()),
              "train": train_briefly(model, train, args.lr_ours if name == OURS else args.lr_theirs, args)}
    start = time.perf_counter()
    base = args.out / "exports" / name
    if name == OURS:
        module = serving_module_for(model, DETECTION, args.image_size, names)
        version = export_saved_model(module, base, version=1, write_config=False)
    else:
        theirs, module, version = KerasCvServingModule(model, args.image_size), None, base / "1"
        tf.saved_model.save(theirs, str(version), signatures={"serving_default": theirs.serving_default},
                            options=EXPORT_OPTIONS)
    record["export_s"] = round(time.perf_counter() - start, 1)
    record["saved_model_pb_bytes"] = (version / "saved_model.pb").stat().st_size
    log(f"[{name}] exported to {version} in {record['export_s']} s")
    return model, module, version, record


# ----------------------------------------------------------------------------- measuring


def make_jpegs(val, count: int) -> tuple[list[bytes], list[int]]:
    """`count` 640x480 JPEGs (quality 90) of val images, and each one's true object count."""
    jpegs, objects = [], []
    for index in range(count):
        record = val.images[index % len(val.images)]
        image = Image.open(val.image_path(record)).convert("RGB").resize((640, 480), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
        objects.append(len(record.annotations))
    return jpegs, objects


def detection_check(signature, jpegs: list[bytes], objects: list[int]) -> dict:
    """Detections per image of one call on every JPEG: all, score >= SHOWN_SCORE, and the true count."""
    out = signature(images=tf.constant(jpegs))
    count, scores = out["num_detections"].numpy(), out["scores"].numpy()
    return {"detections_per_image": round(float(count.mean()), 1), "min": int(count.min()), "max": int(count.max()),
            f"score_ge_{SHOWN_SCORE}": round(float((scores >= SHOWN_SCORE).sum(axis=1).mean()), 2),
            "top_score": round(float(scores.max(axis=1).mean()), 3),
            "true_objects_per_image": round(float(np.mean(objects)), 2)}


def throughput(signatures: dict, jpegs: list[bytes], batch: int, args) -> dict:
    """img/s and CPU-s/img of each signature, medians over rounds; the models alternate within each round."""
    calls = max(1, args.images_per_round // batch)
    batches = [tf.constant([jpegs[(i * batch + j) % len(jpegs)] for j in range(batch)]) for i in range(calls)]
    for signature in signatures.values():
        for i in range(args.warmup):
            signature(images=batches[i % calls])["num_detections"].numpy()
    rates = {name: [] for name in signatures}
    cpu = {name: [] for name in signatures}
    for round_index in range(args.rounds):
        order = list(signatures) if round_index % 2 == 0 else list(reversed(signatures))
        for name in order:
            cpu_start, start = cpu_seconds(), time.perf_counter()
            for images in batches:
                signatures[name](images=images)["num_detections"].numpy()
            rates[name].append(calls * batch / (time.perf_counter() - start))
            cpu[name].append((cpu_seconds() - cpu_start) / (calls * batch))
    result = {name: {"img_per_s": round(statistics.median(rates[name]), 2),
                     "cpu_ms_per_img": round(1000 * statistics.median(cpu[name]), 2),
                     "img_per_s_rounds": [round(r, 2) for r in rates[name]]} for name in signatures}
    result["ratio_img_per_s"] = round(result[OURS]["img_per_s"] / result[THEIRS]["img_per_s"], 3)
    result["ratio_cpu_per_img"] = round(result[OURS]["cpu_ms_per_img"] / result[THEIRS]["cpu_ms_per_img"], 3)
    return result


def round_robin_ms(timed: dict, repeats: int, warmup: int = 2) -> dict:
    """`{name: (fn, inputs)}` -> `{name: median ms}`, every fn called once per repeat in turn."""
    def call(fn, inputs):
        tf.nest.flatten(fn(*inputs))[0].numpy()

    for fn, inputs in timed.values():
        for _ in range(warmup):
            call(fn, inputs)
    times = {name: [] for name in timed}
    for _ in range(repeats):
        for name, (fn, inputs) in timed.items():
            start = time.perf_counter()
            call(fn, inputs)
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(values), 3) for name, values in times.items()}


def same_outputs(first: dict, second: dict, keys) -> bool:
    return all(np.allclose(first[k].numpy(), second[k].numpy(), atol=1e-3) for k in keys)


def profile(ours, module, theirs, loaded: dict, jpegs: list[bytes], batch: int, args) -> dict:
    """ms per call of each stage of our exported path (and keras-cv's model/decode/NMS) at `batch`."""
    size, function = args.image_size, lambda f: tf.function(f, autograph=False)
    images = tf.constant([jpegs[j % len(jpegs)] for j in range(batch)])
    jpeg_decode = function(lambda im: tf.map_fn(
        lambda e: tf.ensure_shape(tf.io.decode_image(e, channels=3, expand_animations=False), [None, None, 3]),
        im, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8)))
    letterbox = function(lambda decoded: tf.map_fn(lambda image: letterbox_image(image, size)[0], decoded,
                                                   fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32)))
    pixels, transforms = function(lambda im: decode_and_letterbox(im, size))(images)
    forward = function(lambda p: ours(p, training=False))
    raw = forward(pixels)

    box_decode = function(ours.boxes_and_scores)  # YoloDetector.decode before its NMS
    boxes, scores = box_decode(raw)
    nms = function(lambda b, s: batched_nms(b, s, ours.nms_config))
    detections = nms(boxes, scores)
    formatting = function(lambda d, t: served_outputs(DETECTION, d, t, size, module._label_lookup,
                                                      len(module.label_names)))
    checks = {"ours_split_equals_decode": same_outputs(detections, function(ours.decode)(raw),
                                                       ("boxes", "scores", "num_detections"))}
    their_forward = function(lambda p: theirs(p, training=False))
    their_raw = their_forward(pixels)
    their_box_decode = function(lambda r: kerascv_boxes(theirs, r, size))
    their_boxes, their_scores = their_box_decode(their_raw)
    their_nms = function(lambda b, s: theirs.prediction_decoder(b, s))
    checks["theirs_split_equals_decode_predictions"] = same_outputs(
        their_nms(their_boxes, their_scores), function(theirs.decode_predictions)(their_raw, pixels),
        ("boxes", "confidence", "num_detections"))
    timed = {"jpeg_decode": (jpeg_decode, (images,)), "letterbox": (letterbox, (jpeg_decode(images),)),
             "forward": (forward, (pixels,)), "box_decode": (box_decode, (raw,)), "nms": (nms, (boxes, scores)),
             "format": (formatting, (detections, transforms)),
             "whole_in_process": (module.serving_default, (images,)),
             "whole_loaded": (lambda im: loaded[OURS].signatures["serving_default"](images=im), (images,)),
             "theirs_forward": (their_forward, (pixels,)), "theirs_box_decode": (their_box_decode, (their_raw,)),
             "theirs_nms": (their_nms, (their_boxes, their_scores)),
             "theirs_whole_loaded": (lambda im: loaded[THEIRS].signatures["serving_default"](images=im), (images,))}
    if hasattr(loaded[OURS], "serve_frame"):  # the export minus decode + letterbox
        timed["loaded_serve_frame"] = (loaded[OURS].serve_frame, (pixels, transforms))
    result = round_robin_ms(timed, args.profile_repeats)
    result["stage_sum"] = round(sum(result[s] for s in STAGES), 3)
    result["share"] = {s: round(result[s] / result["stage_sum"], 3) for s in STAGES}
    result["checks"] = checks
    return result


# ----------------------------------------------------------------------------- report


def report(summary: dict) -> str:
    models, lines = summary["models"], []
    lines += ["| model | params | train steps | final loss | export s | detections/img (min-max) | "
              f"score >= {SHOWN_SCORE} /img | true objects/img | mean top score |", "|---" * 9 + "|"]
    for name, m in models.items():
        d = m["detections"]
        lines.append(f"| {name} | {m['params']:,} | {m['train']['steps']} | {m['train'].get('final_loss', '-')} | "
                     f"{m['export_s']} | {d['detections_per_image']} ({d['min']}-{d['max']}) | "
                     f"{d[f'score_ge_{SHOWN_SCORE}']} | {d['true_objects_per_image']} | {d['top_score']} |")
    lines += ["", "| batch | ours img/s | keras-cv img/s | **ours / theirs** | ours CPU-ms/img | keras-cv CPU-ms/img "
              "| ours / theirs CPU |", "|---" * 7 + "|"]
    for batch, t in summary["throughput"].items():
        lines.append(f"| {batch} | {t[OURS]['img_per_s']} | {t[THEIRS]['img_per_s']} | "
                     f"**{t['ratio_img_per_s']:.2f}** | {t[OURS]['cpu_ms_per_img']} | "
                     f"{t[THEIRS]['cpu_ms_per_img']} | {t['ratio_cpu_per_img']:.2f} |")
    batches = list(summary["profile"])
    lines += ["", "Our exported path, stage by stage (ms per call; share of the stage sum); keras-cv beside "
              "where its stage differs (decode + letterbox are the same ops):", "",
              "| stage | " + " | ".join(f"ours b{b} | share | keras-cv b{b}" for b in batches) + " |",
              "|---" * (1 + 3 * len(batches)) + "|"]
    rows = [(s, s, f"theirs_{s}" if s in ("forward", "box_decode", "nms") else None) for s in STAGES]
    rows += [("**sum of stages**", "stage_sum", None), ("whole, in-process tf.function", "whole_in_process", None),
             ("whole, loaded SavedModel", "whole_loaded", "theirs_whole_loaded"),
             ("loaded serve_frame (no decode/letterbox)", "loaded_serve_frame", None)]
    for label, key, their_key in rows:
        cells = []
        for b in batches:
            p = summary["profile"][b]
            share = f"{p['share'][key]:.0%}" if key in STAGES else ""
            cells += [f"{p[key]:.2f}" if key in p else "-", share, f"{p[their_key]:.2f}" if their_key else ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    paths = ensure_synthetic(args.data_dir, num_images=args.num_images, image_size=args.source_size, seed=args.seed)
    train, val = load_coco(paths["train"]), load_coco(paths["val"])
    names = list(val.label_map.names)
    shutil.rmtree(args.out / "exports", ignore_errors=True)
    nms = NmsConfig(args.iou_threshold, args.score_threshold, args.max_detections)
    summary = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "cores": os.cpu_count(),
               "load_average_before": os.getloadavg(), "image_size": args.image_size, "nms": nms.get_config(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "models": {}}
    built, loaded = {}, {}
    for name in (OURS, THEIRS):
        model, module, version, summary["models"][name] = build_and_export(name, train, names, args)
        built[name] = (model, module)
        loaded[name] = load_saved_model(version)
    jpegs, objects = make_jpegs(val, args.jpegs)
    signatures = {name: loaded[name].signatures["serving_default"] for name in (OURS, THEIRS)}
    for name, signature in signatures.items():
        summary["models"][name]["detections"] = detection_check(signature, jpegs, objects)
    summary["throughput"], summary["profile"] = {}, {}
    for batch in args.batches:
        log(f"throughput at batch {batch}")
        summary["throughput"][batch] = throughput(signatures, jpegs, batch, args)
        log(f"profile at batch {batch}")
        summary["profile"][batch] = profile(built[OURS][0], built[OURS][1], built[THEIRS][0], loaded, jpegs,
                                            batch, args)
        write_json_atomic(summary, args.out / "results.json")
    summary["load_average_after"] = os.getloadavg()
    write_json_atomic(summary, args.out / "results.json")
    print(report(summary))
    failed = [f"b{b} {k}" for b, p in summary["profile"].items() for k, ok in p["checks"].items() if not ok]
    if failed:
        print(f"\nWARNING: split stages differ from the models' own decode: {failed}")
    print(f"\n{os.cpu_count()} cores; NMS {nms.get_config()}; load average before "
          f"{summary['load_average_before'][0]:.2f}, after {summary['load_average_after'][0]:.2f}; "
          f"wrote {args.out / 'results.json'}")
    return summary


if __name__ == "__main__":
    main()
