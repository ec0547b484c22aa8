"""Pictures of annotations and predictions: boxes, labels, instance and semantic masks.

Pure numpy + PIL (no TensorFlow), so the demo, the evaluation report and
`detseg predict` can all draw. Images are `uint8 [H, W, 3]` RGB (float input in
0..255 and grey `[H, W]` are accepted and converted); boxes are `xyxy` absolute pixels,
a box `[x0, y0, x1, y1]` covering the pixel columns `x0 <= x < x1`.
Every function returns a new array; inputs are never modified.
"""

from __future__ import annotations

import colorsys
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detseg.core.atomic_files import write_file_atomic
from detseg.core.contract import SEMANTIC_BACKGROUND, SEMANTIC_IGNORE
from detseg.data.errors import DatasetError

MASK_ALPHA = 0.45  # weight of the class colour over the image inside an instance mask
SEMANTIC_ALPHA = 0.5
_GOLDEN_RATIO_FRACTION = 0.618033988749895
PANEL_GAP = 4  # pixels between panels of side_by_side / image_grid
PANEL_FILL = (255, 255, 255)


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A fixed, saturated RGB colour for a class id; neighbouring ids get distant hues."""
    hue = (int(class_id) * _GOLDEN_RATIO_FRACTION + 0.05) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def _label_colour_key(label: str) -> int:
    """A stable class key from a label name, for callers that pass no class ids."""
    return zlib.crc32(label.encode("utf-8")) % 1000


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """`[H, W]`, `[H, W, 1]` or `[H, W, 3]` of uint8 or float 0..255 -> a new `uint8 [H, W, 3]`."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DatasetError(f"{what}: expected [H, W, 3] or [H, W] pixels, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64)), 0, 255).astype(np.uint8)
    return array.copy()


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _font_size(height: int, width: int) -> int:
    return int(np.clip(round(min(height, width) / 25), 10, 24))


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _check_annotations(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str],
                       scores, masks, class_ids) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DatasetError(f"draw_annotations: boxes must be [N, 4] xyxy, got shape {boxes.shape}")
    count = boxes.shape[0]
    for name, values in (("labels", labels), ("scores", scores), ("class_ids", class_ids)):
        if values is not None and len(values) != count:
            raise DatasetError(f"draw_annotations: {name} has {len(values)} entries for {count} boxes")
    if masks is not None and np.shape(masks) != (count, *image.shape[:2]):
        raise DatasetError(f"draw_annotations: masks must be [N, H, W] = {[count, *image.shape[:2]]}, "
                           f"got {list(np.shape(masks))}")


def overlay_masks(image: np.ndarray, masks: np.ndarray, colours: Sequence[tuple[int, int, int]],
                  alpha: float = MASK_ALPHA) -> np.ndarray:
    """Blend each colour into its mask's pixels (`masks` `[N, H, W]`, nonzero = inside).

    Later masks blend over earlier ones; pixels outside every mask are unchanged.
    """
    out = image.astype(np.float32)
    for mask, colour in zip(masks, colours):
        inside = np.asarray(mask).astype(bool)
        out[inside] = (1 - alpha) * out[inside] + alpha * np.asarray(colour, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _draw_label(draw: ImageDraw.ImageDraw, text: str, box: Sequence[float],
                colour: tuple[int, int, int], font: ImageFont.ImageFont, image_size: tuple[int, int]) -> None:
    """A filled tag with `text` above the box's top-left corner (inside it if no room above)."""
    width, height = image_size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tag_w, tag_h = right - left + 4, bottom - top + 4
    x0 = int(np.clip(round(box[0]), 0, max(width - tag_w, 0)))
    y0 = int(round(box[1])) - tag_h
    if y0 < 0:
        y0 = max(int(round(box[1])), 0)
    draw.rectangle((x0, y0, x0 + tag_w - 1, y0 + tag_h - 1), fill=colour)
    draw.text((x0 + 2 - left, y0 + 2 - top), text, fill=_text_colour(colour), font=font)


def draw_annotations(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str],
                     scores: Sequence[float] | None = None, masks: np.ndarray | None = None,
                     class_ids: Sequence[int] | None = None) -> np.ndarray:
    """Boxes with "label score" tags, and instance masks as translucent overlays.

    image: `[H, W, 3]` pixels; boxes: `float [N, 4]` xyxy pixels; labels: N names;
    scores: N floats or None; masks: `[N, H, W]` 0/1 or bool, or None; class_ids: N ints
    choosing each object's colour (`class_colour`), else the colour follows the label
    name. Returns a new `uint8 [H, W, 3]`.
    """
    rgb = as_rgb_uint8(image)
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        boxes = np.zeros((0, 4), np.float32)
    _check_annotations(rgb, boxes, labels, scores, masks, class_ids)
    keys = class_ids if class_ids is not None else [_label_colour_key(str(name)) for name in labels]
    colours = [class_colour(int(k)) for k in keys]
    if masks is not None and len(boxes):
        rgb = overlay_masks(rgb, np.asarray(masks), colours)
    height, width = rgb.shape[:2]
    canvas = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(canvas)
    line_width = max(1, round(min(height, width) / 200))
    font = _font(_font_size(height, width))
    for i, box in enumerate(boxes.tolist()):
        x0, y0 = round(box[0]), round(box[1])
        x1, y1 = max(round(box[2]) - 1, x0), max(round(box[3]) - 1, y0)  # PIL corners are inclusive
        draw.rectangle((x0, y0, x1, y1), outline=colours[i], width=line_width)
        text = str(labels[i]) if scores is None else f"{labels[i]} {float(scores[i]):.2f}"
        if text:
            _draw_label(draw, text, box, colours[i], font, (width, height))
    return np.asarray(canvas, np.uint8).copy()


def draw_semantic(image: np.ndarray, label_map: np.ndarray, num_classes: int,
                  ignore_label: int = SEMANTIC_IGNORE,
                  background_label: int | None = SEMANTIC_BACKGROUND,
                  alpha: float = SEMANTIC_ALPHA) -> np.ndarray:
    """Colour each pixel by its class: `label_map` `uint8 [H, W]` of `0..num_classes-1`.

    Pixels of `ignore_label` and of `background_label` (None: colour every class) are
    left as they are. Returns a new `uint8 [H, W, 3]`.
    """
    rgb = as_rgb_uint8(image)
    labels = np.asarray(label_map)
    if labels.shape != rgb.shape[:2]:
        raise DatasetError(f"draw_semantic: label map shape {labels.shape} differs from the "
                           f"image's {rgb.shape[:2]}")
    stray = np.unique(labels[(labels != ignore_label) & ((labels < 0) | (labels >= num_classes))])
    if stray.size:
        raise DatasetError(f"draw_semantic: labels {stray[:10].tolist()} are outside 0..{num_classes - 1} "
                           f"and not the ignore label {ignore_label}")
    classes = [c for c in range(num_classes) if c != background_label]
    return overlay_masks(rgb, [labels == c for c in classes], [class_colour(c) for c in classes], alpha)


def _titled(image: np.ndarray, title: str, font: ImageFont.ImageFont, strip_height: int) -> np.ndarray:
    """The image under a white strip of `strip_height` rows carrying `title`."""
    strip = Image.new("RGB", (image.shape[1], strip_height), PANEL_FILL)
    ImageDraw.Draw(strip).text((2, 2), title, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(strip, np.uint8), image], axis=0)


def image_grid(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Images in rows of `columns` cells, each cell the size of the largest image.

    Images sit at their cell's top-left; the rest is white, with PANEL_GAP pixels
    between cells. Returns `uint8 [rows * (Hmax + gap) - gap, columns * (Wmax + gap) - gap, 3]`.
    """
    if not len(images):
        raise DatasetError("image_grid: no images to arrange")
    if columns < 1:
        raise DatasetError(f"image_grid: columns must be >= 1, got {columns}")
    panels = [as_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    cell_h = max(p.shape[0] for p in panels)
    cell_w = max(p.shape[1] for p in panels)
    out = np.empty((rows * (cell_h + PANEL_GAP) - PANEL_GAP, columns * (cell_w + PANEL_GAP) - PANEL_GAP, 3),
                   np.uint8)
    out[:] = PANEL_FILL
    for i, panel in enumerate(panels):
        top, left = (i // columns) * (cell_h + PANEL_GAP), (i % columns) * (cell_w + PANEL_GAP)
        out[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
    return out


def side_by_side(images: Sequence[np.ndarray], titles: Sequence[str] | None = None) -> np.ndarray:
    """Images in one row (e.g. ground truth | prediction), each under its title if given.

    Panels keep their own widths, top-aligned, PANEL_GAP white pixels apart; the row is
    as tall as the tallest panel plus the title strip.
    """
    if not len(images):
        raise DatasetError("side_by_side: no images to arrange")
    if titles is not None and len(titles) != len(images):
        raise DatasetError(f"side_by_side: {len(titles)} titles for {len(images)} images")
    panels = [as_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
    if titles is not None:
        font = _font(_font_size(*panels[0].shape[:2]))
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        strip_height = max(measure.textbbox((0, 0), t or " ", font=font)[3] for t in titles) + 4
        panels = [_titled(p, str(t), font, strip_height) for p, t in zip(panels, titles)]
    height = max(p.shape[0] for p in panels)
    out = np.empty((height, sum(p.shape[1] for p in panels) + PANEL_GAP * (len(panels) - 1), 3), np.uint8)
    out[:] = PANEL_FILL
    left = 0
    for panel in panels:
        out[:panel.shape[0], left:left + panel.shape[1]] = panel
        left += panel.shape[1] + PANEL_GAP
    return out


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write `[H, W, 3]` (or grey `[H, W]`) pixels as an RGB PNG, atomically, making parent folders."""
    picture = Image.fromarray(as_rgb_uint8(image, str(path)), "RGB")
    return write_file_atomic(path, lambda temporary: picture.save(temporary))
