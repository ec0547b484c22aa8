"""`detseg data ...`: validate, convert, split, stats and synth over datasets on disk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detseg.data.synthetic import MAX_SHAPES, MIN_SHAPE_SIZE


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="validate, convert, split, describe or synthesize datasets")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    p = commands.add_parser("validate", help="check a COCO instances file and its images")
    p.add_argument("annotations", type=Path, help="COCO instances JSON")
    p.add_argument("--images", type=Path, default=None, help="image folder (default: guessed)")
    p.add_argument("--no-image-check", action="store_true", help="skip opening the image files")
    p.set_defaults(func=_validate)

    p = commands.add_parser("convert", help="convert between COCO and VOC / YOLO / mask PNGs")
    p.add_argument("--from", dest="source_format", required=True, choices=["voc", "yolo", "masks", "coco"])
    p.add_argument("--to", dest="target_format", default="coco", choices=["coco", "yolo"])
    p.add_argument("--input", type=Path, required=True,
                   help="VOC XML folder, YOLO label folder, mask PNG folder, or COCO JSON")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names, or a file with one per line; fixes the "
                        "category order (VOC, YOLO, masks)")
    p.add_argument("--mask-kind", choices=["instance", "semantic"], default="semantic",
                   help="semantic: pixel = category id (0 background, 255 ignore), each connected "
                        "component one object; instance: pixel = category_id*1000 + instance_index "
                        "(16-bit PNG), 0 background")
    p.add_argument("--out", type=Path, required=True, help="COCO JSON to write, or YOLO label folder")
    p.set_defaults(func=_convert)

    p = commands.add_parser("split", help="split a COCO file by image into train/val/test or k folds")
    p.add_argument("annotations", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the split JSON files")
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test fractions")
    p.add_argument("--folds", type=int, default=0, help="write K folds instead of train/val/test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_split)

    p = commands.add_parser("stats", help="images and objects per class, box sizes, channel mean/std")
    p.add_argument("annotations", type=Path)
    p.add_argument("--images", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--max-images", type=int, default=None,
                   help="measure channel mean/std on an even spread of at most N images")
    p.add_argument("--no-channel-stats", action="store_true", help="skip reading the pixels")
    p.set_defaults(func=_stats)

    p = commands.add_parser("synth", help="write the synthetic shapes dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shapes", type=int, default=MAX_SHAPES,
                   help=f"most shapes per image (default {MAX_SHAPES}; 1 gives single-object images)")
    p.add_argument("--min-shape-size", type=float, default=MIN_SHAPE_SIZE,
                   help=f"smallest shape diameter as a fraction of the image side (default {MIN_SHAPE_SIZE})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.set_defaults(func=_synth)


def _validate(args: argparse.Namespace) -> int:
    from detseg.data.validate import validate_coco

    report = validate_coco(args.annotations, args.images, check_images=not args.no_image_check)
    print(report.format())
    return 0 if report.ok else 1


def _read_class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in spec.split(",") if name.strip()]


def _convert(args: argparse.Namespace) -> int:
    from detseg.data import convert
    from detseg.data.coco import load_coco, write_coco

    classes = _read_class_names(args.classes)
    if args.target_format == "yolo":
        if args.source_format != "coco":
            raise ValueError("--to yolo needs --from coco")
        written = convert.coco_to_yolo(load_coco(args.input, args.images), args.out)
        print(f"wrote {len(written)} YOLO label files and classes.txt to {args.out}")
        return 0
    if args.source_format == "voc":
        payload = convert.voc_to_coco(args.input, args.images, classes)
    elif args.source_format == "yolo":
        payload = convert.yolo_to_coco(args.input, args.images, classes)
    elif args.source_format == "masks":
        payload = convert.masks_to_coco(args.input, args.images, args.mask_kind, classes)
    else:
        raise ValueError("--from coco --to coco is a copy; nothing to convert")
    write_coco(payload, args.out)
    print(f"wrote {args.out}: {len(payload['images'])} images, {len(payload['annotations'])} annotations, "
          f"{len(payload['categories'])} categories")
    return 0


def _split(args: argparse.Namespace) -> int:
    from detseg.data.coco import load_coco, write_coco
    from detseg.data.splits import k_fold, split_by_image

    dataset = load_coco(args.annotations)
    stem = args.annotations.stem
    if args.folds:
        for k, (train, val) in enumerate(k_fold(dataset, args.folds, args.seed)):
            write_coco(train, args.out / f"{stem}_fold{k}_train.json")
            write_coco(val, args.out / f"{stem}_fold{k}_val.json")
        print(f"wrote {args.folds} folds to {args.out}")
        return 0
    try:
        fractions = tuple(float(v) for v in args.fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions must be comma-separated numbers like 0.7,0.15,0.15, "
                         f"got {args.fractions!r}") from None
    for name, part in split_by_image(dataset, fractions, args.seed).items():
        write_coco(part, args.out / f"{stem}_{name}.json")
        print(f"{name}: {len(part.images)} images -> {args.out / f'{stem}_{name}.json'}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from detseg.data.coco import load_coco
    from detseg.data.stats import dataset_statistics, format_statistics

    stats = dataset_statistics(load_coco(args.annotations, args.images),
                               channel_stats=not args.no_channel_stats, max_images=args.max_images)
    print(json.dumps(stats, indent=2) if args.json else format_statistics(stats))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from detseg.data.synthetic import generate_synthetic

    paths = generate_synthetic(args.out, num_images=args.num_images, image_size=args.image_size,
                               seed=args.seed, overwrite=args.overwrite, max_shapes=args.max_shapes,
                               min_shape_size=args.min_shape_size)
    for split, path in paths.items():
        print(f"{split}: {path}", file=sys.stdout)
    return 0
