"""RoIAlign over several pyramid levels: pool each level's crops before stitching, or after.

`models.ops.roi_align` samples every RoI at `output_size * sampling_ratio` points per side
on its level, then average-pools by `sampling_ratio`. The levels' results are put back in
RoI order with `tf.dynamic_stitch`. Stitching the sampled crops (the former order: ~80 MB
for 8 images x 200 RoIs x 14 x 14 x 64 floats) moves `sampling_ratio**2` times the memory
of stitching the pooled ones (what `roi_align` does now); the outputs are the same.

This script runs both orders inside the whole inference graph (`detect`: backbone, FPN,
RPN, proposals, RoIAlign, heads, NMS; for Mask R-CNN the mask head and pasting) of an
untrained Faster R-CNN and Mask R-CNN (tiny backbone, `--image-size`, 50 detections), at
batch 1 and 8, the two sides taking turns; it checks that they give the same detections.

    .venv/bin/python benchmarks/roi_align_pooling.py
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import detseg.models.rcnn.faster_rcnn as faster_rcnn_module  # noqa: E402
from detseg.models.backbones.registry import build_backbone  # noqa: E402
from detseg.models.ops import roi_align as roi_align_module  # noqa: E402
from detseg.models.ops.roi_align import (DEFAULT_SAMPLING_RATIO, crop_and_resize_aligned,  # noqa: E402
                                         per_level_rois)
from detseg.models.rcnn.faster_rcnn import build_faster_rcnn  # noqa: E402
from detseg.models.rcnn.mask_rcnn import build_mask_rcnn  # noqa: E402
from turns import median_ms_per_image  # noqa: E402

NMS = {"iou_threshold": 0.5, "score_threshold": 0.05, "max_detections": 50}


def stitch_then_pool(features, boxes, output_size, strides=None, sampling_ratio=DEFAULT_SAMPLING_RATIO,
                     canonical_size=roi_align_module.CANONICAL_SIZE,
                     canonical_level=roi_align_module.CANONICAL_LEVEL):
    """The former order: the sampled crops of every level stitched, then pooled once."""
    samples = output_size * sampling_ratio

    def sampled_crops(feature, stride, level_boxes, image_index):
        return crop_and_resize_aligned(feature, level_boxes, image_index, stride, samples)

    crops = per_level_rois(features, boxes, sampled_crops, strides, canonical_size, canonical_level)
    pooled = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    channels = next(iter(features.values())).shape[-1]
    return tf.reshape(pooled, [tf.shape(boxes)[0], tf.shape(boxes)[1], output_size, output_size, channels])


def traced_detect(model, pooling, image_size: int):
    """`model.detect` as a graph function traced with `pooling` as the model's RoIAlign."""
    faster_rcnn_module.roi_align = pooling
    try:
        detect = tf.function(lambda images: model.detect(images))
        for batch in (1, 8):
            detect(tf.zeros([batch, image_size, image_size, 3]))
        return detect
    finally:
        faster_rcnn_module.roi_align = roi_align_module.roi_align


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6, help="turns each side takes per batch size")
    parser.add_argument("--images-per-turn", type=int, default=24)
    args = parser.parse_args()
    size = args.image_size
    print(f"detect() at {size} px, tiny backbone, untrained, {NMS['max_detections']} detections; "
          f"median ms per image of {args.rounds} turns")
    print(f"  {'model':12s} {'batch':>5s} {'stitch, pool':>13s} {'pool, stitch':>13s} {'ratio':>6s}  same detections")
    for name, build in (("faster_rcnn", build_faster_rcnn), ("mask_rcnn", build_mask_rcnn)):
        model = build(build_backbone("tiny", (size, size)), 3, options={"nms": NMS})
        sides = {"before": traced_detect(model, stitch_then_pool, size),
                 "after": traced_detect(model, roi_align_module.roi_align, size)}
        for batch in (1, 8):
            images = tf.random.uniform([batch, size, size, 3], 0, 255, seed=1)
            outputs = {side: detect(images) for side, detect in sides.items()}
            same = all(bool(tf.reduce_all(tf.abs(outputs["before"][key] - outputs["after"][key]) <= 1e-5))
                       for key in ("boxes", "scores"))
            calls = {side: (lambda detect=detect: detect(images)["num_detections"].numpy())
                     for side, detect in sides.items()}
            ms = median_ms_per_image(calls, batch, max(1, args.images_per_turn // batch), args.rounds)
            before, after = ms["before"], ms["after"]
            print(f"  {name:12s} {batch:5d} {before:10.2f} ms {after:10.2f} ms {before / after:6.2f}  {same}",
                  flush=True)


if __name__ == "__main__":
    main()
