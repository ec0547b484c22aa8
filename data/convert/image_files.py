"""Finding image files on disk and reading their sizes, for the format converters.

Converters pair an annotation file with its image by relative path and stem
(`images/a/b.jpg` <-> `labels/a/b.txt`); COCO `file_name`s are these relative paths,
written with forward slashes so the JSON is the same on every OS.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from detseg.data.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def list_images(image_dir: Path) -> list[Path]:
    """Image files under `image_dir` (recursively) as sorted paths relative to it."""
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    return sorted(p.relative_to(image_dir) for p in image_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def images_by_stem(image_dir: Path) -> dict[str, list[Path]]:
    """Relative image paths grouped by file stem (`a/b.jpg` -> key `b`)."""
    by_stem: dict[str, list[Path]] = {}
    for relative in list_images(image_dir):
        by_stem.setdefault(relative.stem, []).append(relative)
    return by_stem


def read_image_size(path: Path) -> tuple[int, int]:
    """`(width, height)` of an image from its header only (the pixels are not decoded).

    EXIF orientation is NOT applied: detseg decodes pixels without it, so the stored
    frame is the one annotations must refer to.
    """
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None


def as_file_name(relative: Path) -> str:
    """A relative path as a COCO `file_name` (forward slashes)."""
    return relative.as_posix()
