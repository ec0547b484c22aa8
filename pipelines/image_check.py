"""Cheap up-front checks of image files, so a bad file is named before tf.data runs.

`tf.io.decode_image` inside a parallel tf.data map fails with a message that does not
name the file, and it fails only when the bad element is reached (maybe an hour into
training). So every file is checked when the pipeline is built: it exists, its header
is a PNG/JPEG/BMP/GIF that PIL can parse (lazily: header only), its size matches the
annotation record, and it is not truncated (PNG ends with its IEND chunk, JPEG with
its EOI marker, GIF with its trailer byte, BMP is as long as its header says). This
reads a few bytes per file; it does not decode pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DECODABLE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what tf.io.decode_image reads
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_GIF_END = b"\x3b"
_TAIL_BYTES = 16


def image_file_problem(path: Path, height: int | None = None, width: int | None = None) -> str | None:
    """Why `path` cannot be used as an image of `height x width` pixels, or None if it can.

    The reason is short and human-readable ("file not found", "truncated PNG (no IEND
    chunk)", "size 64x80 does not match the annotation's 64x64", ...).
    """
    try:
        file_size = os.path.getsize(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot stat file ({error.strerror or error})"
    if not os.path.isfile(path):
        return "not a regular file"
    if file_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image_format, (actual_width, actual_height) = image.format, image.size
    except UnidentifiedImageError:
        return "not a recognised image (unreadable header)"
    except OSError as error:
        return f"cannot read image header ({error})"
    if image_format not in DECODABLE_FORMATS:
        return f"format {image_format} is not one of {', '.join(DECODABLE_FORMATS)}"
    truncation = _truncation_problem(path, image_format, file_size)
    if truncation:
        return truncation
    if height is not None and width is not None and (actual_height, actual_width) != (height, width):
        return (f"image is {actual_width}x{actual_height} (width x height) but the annotation "
                f"says {width}x{height}")
    return None


def _truncation_problem(path: Path, image_format: str, file_size: int) -> str | None:
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(max(file_size - _TAIL_BYTES, 0))
        tail = f.read()
    if image_format == "PNG" and not tail.endswith(_PNG_END):
        return "truncated or corrupt PNG (does not end with an IEND chunk)"
    if image_format == "JPEG" and _JPEG_END not in tail:
        return "truncated or corrupt JPEG (no end-of-image marker)"
    if image_format == "GIF" and not tail.endswith(_GIF_END):
        return "truncated or corrupt GIF (no trailer byte)"
    if image_format == "BMP" and head[:2] == b"BM":
        declared = int.from_bytes(head[2:6], "little")
        # Some writers leave the size field 0; only a file SHORTER than declared is cut off.
        if declared and file_size < declared:
            return f"truncated BMP ({file_size} of {declared} bytes)"
    return None
