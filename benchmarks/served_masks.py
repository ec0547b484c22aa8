"""Served Mask R-CNN: masks for every detection slot, or only for the slots in use.

A Mask R-CNN's detections are `K` slots (`max_detections`), the first `num_detections` of
each image real and the rest padding. The mask head, the pasting into the model's frame
and the mapping of each mask back to the original image size used to run on all `K`
slots; they now run on the first `D` only, `D` the batch's largest `num_detections`
(`models.ops.nms.detections_in_use`), and the served `masks` output has `D` rows per image
instead of `K`. Each image's detections and their masks are the same (checked here).

The "before" side is the same code with `detections_in_use` returning `K`: exactly the
former behaviour. Each side is exported to its own SavedModel; both are called in-process
through `serving_default` (encoded JPEGs in, decoding and letterbox in the graph), taking
turns, at batch 1 and 8, for an image with few detections and one with every slot used.
The REST response size (TF Serving's JSON row format) is printed too.

The model: Mask R-CNN, tiny backbone, untrained (timing only), `--frame` px, `K` = 50
(as configs/mask_rcnn_lite0.yaml). The detection count is set through the score
threshold: halfway between the image's `n`-th and `n + 1`-th best score.

    .venv/bin/python benchmarks/served_masks.py            # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import detseg.models.rcnn.mask_rcnn as mask_rcnn_module  # noqa: E402
import detseg.serving.task_outputs as task_outputs_module  # noqa: E402
from detseg.data.synthetic import render_image  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.ops.letterbox import letterbox_images  # noqa: E402
from detseg.models.ops.nms import detections_in_use  # noqa: E402
from detseg.serving.export import export_saved_model  # noqa: E402
from detseg.serving.json_tensors import ROW, response_json  # noqa: E402
from detseg.serving.serving_module import DEFAULT_SIGNATURE, serving_module_for  # noqa: E402
from turns import median_ms_per_image  # noqa: E402

SLOTS = 50
NAMES = ["circle", "triangle", "rectangle"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame", type=int, default=224, help="the model's letterbox side")
    parser.add_argument("--detections", type=int, nargs="+", default=[5, SLOTS], help="detections per image")
    parser.add_argument("--rounds", type=int, default=5, help="turns each side takes per setting")
    parser.add_argument("--images-per-turn", type=int, default=16)
    return parser.parse_args()


def photo_jpeg() -> bytes:
    """A 640 x 480 JPEG of a synthetic scene (shapes on a textured background)."""
    image, _, _ = render_image(seed=0, index=3, size=640)
    return tf.io.encode_jpeg(image[:480], quality=90).numpy()


def build_model(frame: int, score_threshold: float):
    keras.utils.set_random_seed(0)  # the same weights for every threshold
    nms = {"iou_threshold": 0.5, "score_threshold": score_threshold, "max_detections": SLOTS}
    return mask_rcnn_module.build_mask_rcnn(build_backbone("tiny", (frame, frame)), len(NAMES), options={"nms": nms})


def threshold_for(detections: int, frame: int, jpeg: bytes) -> float:
    """The score threshold that leaves `detections` detections in the image."""
    framed, _ = letterbox_images(tf.io.decode_jpeg(jpeg)[tf.newaxis], frame)
    scores = np.sort(build_model(frame, 0.0).predict_step(framed)["scores"].numpy()[0])[::-1]
    if detections >= SLOTS:
        return 0.0
    return float((scores[detections - 1] + scores[detections]) / 2)


def exported_signature(frame: int, threshold: float, every_slot: bool, directory: str):
    """`serving_default` of the exported model; `every_slot`: the former behaviour."""
    def all_slots(num_detections):
        return tf.constant(SLOTS, tf.int32)

    in_use = all_slots if every_slot else detections_in_use
    mask_rcnn_module.detections_in_use = task_outputs_module.detections_in_use = in_use
    try:
        module = serving_module_for(build_model(frame, threshold), "instance", frame, NAMES)
        version = export_saved_model(module, directory, write_config=False)
    finally:
        mask_rcnn_module.detections_in_use = task_outputs_module.detections_in_use = detections_in_use
    return tf.saved_model.load(str(version)).signatures[DEFAULT_SIGNATURE]


def same_detections(before: dict, after: dict) -> bool:
    counts = after["num_detections"].numpy()
    if not np.array_equal(before["num_detections"].numpy(), counts):
        return False
    for row, count in enumerate(counts):
        if not (np.allclose(before["boxes"].numpy()[row, :count], after["boxes"].numpy()[row, :count], atol=1e-4)
                and np.array_equal(before["masks"].numpy()[row, :count], after["masks"].numpy()[row, :count])):
            return False
    return True


def response_bytes(outputs: dict) -> int:
    return len(response_json({k: v.numpy() for k, v in outputs.items()}, ROW))


def main() -> None:
    args = parse_args()
    jpeg = photo_jpeg()
    print(f"served Mask R-CNN (tiny backbone, untrained, {args.frame} px frame, K = {SLOTS}), 640 x 480 JPEG; "
          f"median ms per image of {args.rounds} turns")
    print(f"  {'detections':>10s} {'batch':>5s} {'all K slots':>12s} {'slots in use':>13s} {'ratio':>6s}  "
          f"{'REST body, all K':>17s} {'in use':>9s}  same detections")
    with tempfile.TemporaryDirectory() as workdir:
        for detections in args.detections:
            threshold = threshold_for(detections, args.frame, jpeg)
            sides = {side: exported_signature(args.frame, threshold, side == "before", f"{workdir}/{side}{detections}")
                     for side in ("before", "after")}
            for batch in (1, 8):
                images = tf.constant([jpeg] * batch)
                outputs = {side: serve(images=images) for side, serve in sides.items()}
                same = same_detections(outputs["before"], outputs["after"])
                sizes = {side: response_bytes(out) / batch / 1e6 for side, out in outputs.items()}
                calls = {side: (lambda serve=serve: serve(images=images)["num_detections"].numpy())
                         for side, serve in sides.items()}
                ms = median_ms_per_image(calls, batch, max(1, args.images_per_turn // batch), args.rounds)
                before, after = ms["before"], ms["after"]
                found = int(outputs["after"]["num_detections"].numpy()[0])
                print(f"  {found:10d} {batch:5d} {before:9.1f} ms {after:10.1f} ms {before / after:6.2f}  "
                      f"{sizes['before']:14.1f} MB {sizes['after']:6.1f} MB  {same}", flush=True)


if __name__ == "__main__":
    main()
