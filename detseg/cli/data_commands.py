"""`detseg data ...`: validate, convert, split, stats and synth over datasets on disk.

Errors from `detseg.data` that name a Python option (`OptionError`) are re-worded with
the flag (`overwrite=True` -> `--overwrite`). A conversion whose input needs changes the
user did not allow (`RepairsNeeded`) prints one line and exits 1 with nothing written.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable

from detseg.data.errors import DatasetError, OptionError
from detseg.data.synthetic import MAX_SHAPES, MIN_SHAPE_SIZE

EXIT_REPAIRS_NEEDED = 1
# formats each repair flag applies to (--from X, or "coco->yolo")
REPAIR_FLAG_FORMATS = {
    "clip_boxes": ("voc", "yolo", "coco->yolo"),
    "drop_invalid": ("voc", "yolo", "coco->yolo"),
    "include_unlabeled": ("yolo",),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="validate, convert, split, describe or synthesize datasets")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _register_validate(commands)
    _register_convert(commands)
    _register_split(commands)
    _register_stats(commands)
    _register_synth(commands)


def _in_command_line_terms(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a data command; errors naming Python options are re-raised naming the flags."""
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OptionError as error:
            raise DatasetError(error.for_command_line()) from None
    return run


def _register_validate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("validate", help="check a COCO instances file and its images")
    p.add_argument("annotations", type=Path, help="COCO instances JSON to check")
    p.add_argument("--images", type=Path, default=None,
                   help="image folder (default: images/ beside the annotations file or beside its "
                        "folder, else the file's own folder; the folder used is printed)")
    p.add_argument("--no-image-check", action="store_true",
                   help="check the JSON only, without opening the image files")
    p.set_defaults(func=_in_command_line_terms(_validate))


def _register_convert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert", help="convert between COCO and VOC / YOLO / mask PNGs",
                            description="Convert annotations. Nothing in the data is changed silently: "
                                        "a box to clip, an invalid box to drop or an unlabelled image to "
                                        "add stops the conversion (exit 1, nothing written) unless its "
                                        "flag allows it; what was changed is reported.")
    p.add_argument("--from", dest="source_format", required=True, choices=["voc", "yolo", "masks", "coco"],
                   help="input format")
    p.add_argument("--to", dest="target_format", default="coco", choices=["coco", "yolo"],
                   help="output format (yolo only --from coco)")
    p.add_argument("--input", type=Path, required=True,
                   help="VOC XML folder, YOLO label folder, mask PNG folder, or COCO JSON")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names, or a .txt file with one per line; fixes the "
                        "category order (VOC, YOLO, masks; required by --mask-kind labels)")
    p.add_argument("--mask-kind", choices=["instance", "semantic", "labels"], default=None,
                   help="--from masks only (default: semantic). semantic: pixel = category id (0 "
                        "background, 255 ignore), each connected component one object; instance: pixel "
                        "= category_id*1000 + instance_index (16-bit PNG), 0 background; labels: 0 "
                        "background, 1..K the objects of the one class named by --classes")
    p.add_argument("--out", type=Path, required=True, help="COCO JSON to write, or YOLO label folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a YOLO label folder is emptied first)")
    p.add_argument("--clip-boxes", action="store_true",
                   help="clip boxes that reach outside their image (reported); default: stop")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop boxes with no area inside their image (reported); default: stop")
    p.add_argument("--include-unlabeled", action="store_true",
                   help="--from yolo: add images without a label file as images without objects "
                        "(reported); default: stop")
    p.set_defaults(func=_in_command_line_terms(_convert))


def _register_split(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("split", help="split a COCO file by image into train/val/test or k folds")
    p.add_argument("annotations", type=Path, help="COCO instances JSON to split")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the split JSON files (<name>_train.json, ... or <name>_fold<k>_*.json)")
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test fractions of the images")
    p.add_argument("--folds", type=int, default=0, help="write K folds instead of train/val/test")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that assigns images")
    p.add_argument("--overwrite", action="store_true", help="replace split files that already exist")
    p.set_defaults(func=_in_command_line_terms(_split))


def _register_stats(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("stats", help="images and objects per class, box sizes, channel mean/std")
    p.add_argument("annotations", type=Path, help="COCO instances JSON to describe")
    p.add_argument("--images", type=Path, default=None,
                   help="image folder for the channel statistics (default: found as for validate)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--max-images", type=int, default=None,
                   help="measure channel mean/std on an even spread of at most N images")
    p.add_argument("--no-channel-stats", action="store_true", help="skip reading the pixels")
    p.set_defaults(func=_in_command_line_terms(_stats))


def _register_synth(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("synth", help="write the synthetic shapes dataset")
    p.add_argument("--out", type=Path, required=True,
                   help="dataset folder to write (images/, masks/, annotations/)")
    p.add_argument("--num-images", type=int, default=200, help="number of images, split 70/15/15")
    p.add_argument("--image-size", type=int, default=256, help="side of the square images in pixels (>= 32)")
    p.add_argument("--seed", type=int, default=0, help="seed: the same arguments give the same bytes")
    p.add_argument("--max-shapes", type=int, default=MAX_SHAPES,
                   help=f"most shapes per image (default {MAX_SHAPES}; 1 gives single-object images)")
    p.add_argument("--min-shape-size", type=float, default=MIN_SHAPE_SIZE,
                   help=f"smallest shape diameter as a fraction of the image side (default {MIN_SHAPE_SIZE})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.set_defaults(func=_in_command_line_terms(_synth))


def _validate(args: argparse.Namespace) -> int:
    from detseg.data.validate import validate_coco

    report = validate_coco(args.annotations, args.images, check_images=not args.no_image_check)
    if report.sections_read:
        if args.no_image_check:
            print("image files: not checked (--no-image-check)")
        else:
            guessed = " (found from the annotations file's place; choose with --images)"
            print(f"image folder: {report.image_dir}{guessed if report.image_dir_guessed else ''}")
    print(report.format())
    return 0 if report.ok else 1


def read_class_names(spec: str | None) -> list[str] | None:
    """`--classes`: `cat,dog`, or a file with one name per line (UTF-8, a BOM skipped).

    A value that looks like a path (ends in .txt or holds a path separator) must be a
    file: a mistyped file name is an error, not a class name.
    """
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise DatasetError(f"--classes {spec}: cannot be read as UTF-8 text ({error})") from None
        if not names:
            raise DatasetError(f"--classes {spec}: the file holds no class names (one per line expected)")
        return names
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if spec.lower().endswith(".txt") or any(s in spec for s in separators):
        what = "is a folder" if path.is_dir() else "not found"
        raise DatasetError(f"--classes {spec}: {what}; give a file with one class name per line, "
                           f"or the names themselves: --classes cat,dog")
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise DatasetError("--classes is empty; give the names (--classes cat,dog) or a file with one per line")
    return names


def _check_convert_flags(args: argparse.Namespace) -> str:
    """The conversion's name (`voc`, `yolo`, `masks`, `coco->yolo`) once its flags fit it."""
    if args.target_format == "yolo" and args.source_format != "coco":
        raise DatasetError("--to yolo needs --from coco")
    if args.target_format == "coco" and args.source_format == "coco":
        raise DatasetError("--from coco --to coco is a copy; nothing to convert")
    conversion = "coco->yolo" if args.target_format == "yolo" else args.source_format
    for option, formats in REPAIR_FLAG_FORMATS.items():
        if getattr(args, option) and conversion not in formats:
            flag = "--" + option.replace("_", "-")
            raise DatasetError(f"{flag} does not apply to --from {args.source_format} --to {args.target_format} "
                               f"(only to {', '.join(formats)})")
    if args.mask_kind is not None and conversion != "masks":
        raise DatasetError("--mask-kind applies to --from masks only")
    return conversion


def _convert(args: argparse.Namespace) -> int:
    from detseg.data import convert
    from detseg.data.coco import load_coco, write_coco
    from detseg.data.output_paths import check_output_file
    from detseg.data.repairs import Repairs, RepairsNeeded

    conversion = _check_convert_flags(args)
    classes = read_class_names(args.classes)
    repairs = Repairs(clip_boxes=args.clip_boxes, drop_invalid=args.drop_invalid,
                      include_unlabeled=args.include_unlabeled)
    try:
        if conversion == "coco->yolo":
            written = convert.coco_to_yolo(load_coco(args.input, args.images), args.out, repairs, args.overwrite)
            summary = f"wrote {len(written)} YOLO label files and classes.txt to {args.out}"
        else:
            check_output_file(args.out, args.overwrite)
            if conversion == "voc":
                payload = convert.voc_to_coco(args.input, args.images, classes, repairs)
            elif conversion == "yolo":
                payload = convert.yolo_to_coco(args.input, args.images, classes, repairs)
            else:
                payload = convert.masks_to_coco(args.input, args.images, args.mask_kind or "semantic", classes)
            write_coco(payload, args.out)
            summary = (f"wrote {args.out}: {len(payload['images'])} images, {len(payload['annotations'])} "
                       f"annotations, {len(payload['categories'])} categories")
    except RepairsNeeded as error:
        print(f"detseg: error: {error.for_command_line()}", file=sys.stderr)
        return EXIT_REPAIRS_NEEDED
    print(summary)
    for line in repairs.summary_lines():
        print(line)
    return 0


def _split(args: argparse.Namespace) -> int:
    from detseg.data.coco import load_coco, write_coco
    from detseg.data.output_paths import check_output_file
    from detseg.data.splits import k_fold, split_by_image

    dataset = load_coco(args.annotations)
    stem = args.annotations.stem
    if args.folds:
        parts = {}
        for k, (train, val) in enumerate(k_fold(dataset, args.folds, args.seed)):
            parts[f"fold{k}_train"], parts[f"fold{k}_val"] = train, val
    else:
        try:
            fractions = tuple(float(v) for v in args.fractions.split(","))
        except ValueError:
            raise DatasetError(f"--fractions must be comma-separated numbers like 0.7,0.15,0.15, "
                               f"got {args.fractions!r}") from None
        parts = split_by_image(dataset, fractions, args.seed)
    targets = {name: check_output_file(args.out / f"{stem}_{name}.json", args.overwrite) for name in parts}
    for name, part in parts.items():
        write_coco(part, targets[name])
        print(f"{name}: {len(part.images)} images -> {targets[name]}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from detseg.data.coco import load_coco
    from detseg.data.stats import dataset_statistics, format_statistics

    stats = dataset_statistics(load_coco(args.annotations, args.images),
                               channel_stats=not args.no_channel_stats, max_images=args.max_images)
    print(json.dumps(stats, indent=2) if args.json else format_statistics(stats))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from detseg.data.coco import read_json
    from detseg.data.synthetic import generate_synthetic

    paths = generate_synthetic(args.out, num_images=args.num_images, image_size=args.image_size,
                               seed=args.seed, overwrite=args.overwrite, max_shapes=args.max_shapes,
                               min_shape_size=args.min_shape_size)
    size = f"{args.image_size}x{args.image_size}"
    print(f"wrote {args.num_images} images ({size} PNG) to {args.out / 'images'} and their "
          f"{args.num_images} semantic masks (PNG, pixel = category id) to {args.out / 'masks'}")
    for split, path in paths.items():
        payload = read_json(path)
        print(f"{split}: {path} ({len(payload['images'])} image(s), {len(payload['annotations'])} object(s))")
    return 0
