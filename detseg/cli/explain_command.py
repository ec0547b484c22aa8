"""`detseg explain`: see inside a trained model, one HTML page per image.

    detseg explain runs/shapes --images a.jpg b.png --out explain/
    detseg explain runs/shapes --images a.jpg --out explain/ --method saliency --method grad_cam \
        --grad-cam-layer P3 --occlusion-patch 8 --occlusion-stride 4

For each image it writes `<stem>.html` (every picture inline) and `<stem>/<n>_<method>.png`
per explained target; the model's own pictures go to `model/`. The work is
`detseg.workflows.explain.explain_run`; this module parses and prints.
"""

from __future__ import annotations

import argparse

from detseg.cli.arguments import (existing_file, float_between, int_at_least, output_folder,
                                   run_directory)

# The workflow's METHODS, spelled here so that parsing imports no TensorFlow (a test checks they agree).
METHODS = ("saliency", "guided_backprop", "deconvnet", "grad_cam", "occlusion", "filters", "patches",
           "embedding", "class_model")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="see inside a trained model: saliency, guided backprop, Grad-CAM, occlusion, ...",
        description="Explain a finished run's Keras model on image files: for each image an HTML page "
                    "(pictures inline) and PNGs. The score is the family's: cls+loc the class "
                    "probability; detectors one detection's score (each detection its own maps); "
                    "semantic segmentation a class's mean probability over its predicted region.")
    p.add_argument("run_dir", type=run_directory, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--images", nargs="+", type=existing_file, required=True, metavar="IMAGE",
                   help="image files (PNG/JPEG/BMP/GIF); together they are the set the patches and "
                        "the embedding are taken over")
    p.add_argument("--out", type=output_folder, required=True, help="folder for the pages and PNGs")
    p.add_argument("--method", action="append", choices=METHODS, default=None,
                   help="a method to run (repeat for several; default: all)")
    p.add_argument("--max-detections", type=int_at_least(1), default=3,
                   help="detectors: how many detections per image get their own maps")
    p.add_argument("--min-score", type=float_between(0.0, 1.0), default=0.05,
                   help="detectors: explain only detections scoring at least this")
    p.add_argument("--class", dest="class_index", type=int_at_least(0), default=None,
                   help="class index to explain (cls+loc; semantic: 0 is background); default: the predicted one")
    p.add_argument("--grad-cam-layer", default="P4",
                   help="Grad-CAM layer: a pyramid level (P3, P4, P5) or a layer name of the model")
    p.add_argument("--occlusion-patch", type=int_at_least(1), default=16, help="occlusion square side, px")
    p.add_argument("--occlusion-stride", type=int_at_least(1), default=8, help="occlusion square step, px")
    p.add_argument("--patch-layer", default="P3", help="layer of the maximally activating patches")
    p.add_argument("--patch-channel", type=int_at_least(0), default=None,
                   help="channel of the patches (default: the layer's strongest channel over the images)")
    p.add_argument("--top-patches", type=int_at_least(1), default=9, help="how many patches")
    p.add_argument("--ascent-steps", type=int_at_least(1), default=64, help="class model: gradient ascent steps")
    p.add_argument("--ascent-l2", type=float_between(0.0, 1e6), default=1e-4,
                   help="class model: L2 weight on the image (in -1..1)")
    p.add_argument("--ascent-jitter", type=int_at_least(0), default=2, help="class model: random shift, px (0: off)")
    p.add_argument("--ascent-blur-every", type=int_at_least(0), default=4,
                   help="class model: Gaussian blur every N steps (0: off)")
    p.add_argument("--imagenet-class", type=int_at_least(0), default=None,
                   help="also draw this ImageNet class's model of --imagenet-classifier (offline weights)")
    p.add_argument("--imagenet-classifier", default="efficientnet_lite0",
                   choices=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
                   help="the ImageNet classifier of --imagenet-class")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of t-SNE and gradient ascent")
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    if args.imagenet_class is not None and args.imagenet_class >= 1000:
        raise ValueError(f"--imagenet-class {args.imagenet_class}: ImageNet classes are 0..999")
    from detseg.workflows.explain import ExplainOptionError, ExplainOptions, explain_run  # imports TensorFlow

    options = ExplainOptions(
        methods=tuple(dict.fromkeys(args.method or METHODS)), max_detections=args.max_detections,
        min_score=args.min_score, class_index=args.class_index, grad_cam_layer=args.grad_cam_layer,
        occlusion_patch=args.occlusion_patch, occlusion_stride=args.occlusion_stride,
        patch_layer=args.patch_layer, patch_channel=args.patch_channel, top_patches=args.top_patches,
        ascent_steps=args.ascent_steps, ascent_l2=args.ascent_l2, ascent_jitter=args.ascent_jitter,
        ascent_blur_every=args.ascent_blur_every, imagenet_classifier=args.imagenet_classifier,
        imagenet_class=args.imagenet_class, seed=args.seed)
    try:
        results = explain_run(args.run_dir, args.images, args.out, options)
    except ExplainOptionError as error:  # named in the command line's terms
        flag = "--class" if error.option == "class_index" else "--" + error.option.replace("_", "-")
        raise ValueError(f"{flag} {error.message}") from None
    for result in results:
        print(f"{result.path}: {len(result.targets)} target(s) -> {result.page}", flush=True)
    return 0
