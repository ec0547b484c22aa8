"""`detseg predict`: run an exported model on image files, locally or through a server.

    detseg predict a.jpg b.png --model exports/shapes/3 --out preds/
    detseg predict a.jpg --server http://127.0.0.1:8501 --model-name shapes --out preds/

For each image it writes `<stem>.json` (what the model found, boxes in original pixels,
instance masks as COCO RLE) and `<stem>.png` (the image with boxes, labels and masks
drawn, or the class map for segmentation). The task is read from the signature's outputs.
The work is `detseg.workflows.predict.predict_images`; this module parses and prints.
"""

from __future__ import annotations

import argparse
from detseg.cli.arguments import (existing_file, float_between, int_at_least, output_folder,
                                   saved_model_path, server_address)

CHUNK_SIZE = 8  # images per request: bounded memory and request size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict on images with a SavedModel or a TF Serving server",
                              description="Run an exported model on image files and write, per image, "
                                          "<stem>.json (what it found) and <stem>.png (drawn). The paths "
                                          "and numbers are checked before TensorFlow is imported.")
    p.add_argument("images", nargs="+", type=existing_file, metavar="IMAGE",
                   help="image files (PNG/JPEG/BMP/GIF)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=saved_model_path,
                        help="a SavedModel version folder, or a base path (latest version)")
    source.add_argument("--server", type=server_address,
                        help="server address: http://host:8501 (REST) or grpc://host:8500")
    p.add_argument("--model-name", help="model name on the server (with --server)")
    p.add_argument("--version", type=int_at_least(1), default=None,
                   help="model version on the server (default: latest)")
    p.add_argument("--out", type=output_folder, required=True, help="folder for <stem>.json and <stem>.png")
    p.add_argument("--min-score", type=float_between(0.0, 1.0), default=0.0,
                   help="drop detections scoring below this")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    if args.server and not args.model_name:
        raise ValueError("--server needs --model-name")
    if args.model_name and not args.server:
        raise ValueError("--model-name goes with --server (a SavedModel given with --model is used as it is)")
    if args.version is not None and not args.server:
        raise ValueError("--version goes with --server (with --model, name the version folder itself)")
    from detseg.workflows.predict import iter_predictions, summary_line  # imports TensorFlow

    for result in iter_predictions(args.images, args.model, server=args.server, model_name=args.model_name,
                                   version=args.version, out=args.out, min_score=args.min_score,
                                   batch_size=CHUNK_SIZE):
        print(summary_line(result), flush=True)
    return 0
