"""Pictures and the self-contained HTML page of `detseg explain` (numpy in, uint8 pictures and text out).

- `heatmap_picture(image, heat)`: a map >= 0 over the image (inferno, scaled to its max);
  `signed_picture(values, image=...)`: a signed map (red up, blue down, white 0, symmetric
  scale) over the image's grey version;
  `gradient_picture(gradient)`: a `[S, S, 3]` gradient as an image (mid-grey 0, +-3 std);
  `filters_picture(filters)`: a grid of first-layer kernels; `scatter_picture`: a t-SNE plot.
- `html_page(title, sections)`: one HTML file with every picture inline as a base64 PNG,
  so it can be mailed or opened anywhere without its folder.
Small model frames are enlarged (nearest neighbour) to about `DISPLAY_SIDE` px for the eye.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from detseg.data.draw import as_rgb_uint8, draw_annotations, image_grid

DISPLAY_SIDE = 256
HEATMAP_OPACITY = 0.55


@dataclass(frozen=True)
class Figure:
    """One picture of the page, with its title and a line saying how to read it."""

    title: str
    image: np.ndarray
    caption: str = ""


@dataclass
class Section:
    """A titled row of figures (a note stands in when a method had nothing to show)."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    note: str = ""


def enlarged(image: np.ndarray, side: int = DISPLAY_SIDE, factor: int | None = None) -> np.ndarray:
    """`image` repeated (nearest neighbour) by `factor`, or the integer factor that brings it nearest `side`."""
    factor = max(1, int(factor or round(side / max(image.shape[:2]))))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _colormap(name: str, values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def heatmap_picture(image: np.ndarray, heat: np.ndarray, box=None, label: str = "") -> np.ndarray:
    """`heat [S, S]` (>= 0) over `image [S, S, 3]`, with `box` drawn when given; enlarged."""
    heat = np.asarray(heat, np.float32)
    scaled = heat / heat.max() if heat.max() > 0 else np.zeros_like(heat)
    blended = ((1 - HEATMAP_OPACITY) * as_rgb_uint8(image).astype(np.float32)
               + HEATMAP_OPACITY * _colormap("inferno", scaled).astype(np.float32))
    return _with_box(enlarged(blended.astype(np.uint8)), box, label, heat.shape[0])


def signed_picture(values: np.ndarray, box=None, label: str = "", image: np.ndarray | None = None) -> np.ndarray:
    """A signed `[S, S]` map: red positive, blue negative, white zero, scaled to its largest size.

    With `image` (`[S, S, 3]`), the map is laid over its grey version, so the places can be read.
    """
    values = np.asarray(values, np.float32)
    largest = float(np.abs(values).max()) or 1.0
    picture = _colormap("RdBu_r", 0.5 + 0.5 * values / largest).astype(np.float32)
    if image is not None:
        grey = as_rgb_uint8(image).astype(np.float32).mean(axis=-1, keepdims=True)
        picture = (1 - HEATMAP_OPACITY) * grey + HEATMAP_OPACITY * picture
    return _with_box(enlarged(picture.astype(np.uint8)), box, label, values.shape[0])


def all_zero(values: np.ndarray) -> bool:
    """True when a map has nothing to show (every value 0)."""
    return not np.any(np.asarray(values))


def gradient_picture(gradient: np.ndarray) -> np.ndarray:
    """A `[S, S, 3]` gradient as pixels: 0 is mid-grey, +-3 standard deviations reach 0 / 255."""
    gradient = np.asarray(gradient, np.float32)
    spread = 3.0 * float(gradient.std()) or 1.0
    return enlarged(np.clip(127.5 + 127.5 * gradient / spread, 0, 255).astype(np.uint8))


def boxed_picture(image: np.ndarray, box=None, label: str = "") -> np.ndarray:
    """The model's input frame, enlarged, with `box` drawn when given."""
    return _with_box(enlarged(as_rgb_uint8(image)), box, label, image.shape[0])


def _with_box(picture: np.ndarray, box, label: str, frame_side: int) -> np.ndarray:
    if box is None:
        return picture
    scale = picture.shape[0] / frame_side
    return draw_annotations(picture, np.asarray([box], np.float32) * scale, [label])


def filters_picture(filters: np.ndarray, columns: int = 8) -> np.ndarray:
    """Kernels `[n, kh, kw, 3]` in 0..1 as a grid, each enlarged to about 48 px."""
    panels = [enlarged((f * 255).astype(np.uint8), 48) for f in filters]
    return image_grid(panels, columns)


def scatter_picture(points: np.ndarray, classes: Sequence[int], names: Sequence[str],
                    query: int | None = None, neighbours: Sequence[int] = ()) -> np.ndarray:
    """A 2-D embedding coloured by class (legend by name); the query and its neighbours ringed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure as PlotFigure

    figure = PlotFigure(figsize=(5, 4), dpi=80)
    axes = figure.add_subplot()
    classes = np.asarray(classes)
    for index in sorted(set(classes.tolist())):
        chosen = classes == index
        axes.scatter(points[chosen, 0], points[chosen, 1], s=24, label=_name(names, index))
    if query is not None:
        axes.scatter(points[[query], 0], points[[query], 1], s=160, facecolors="none", edgecolors="black",
                     label="query")
        if len(neighbours):
            axes.scatter(points[list(neighbours), 0], points[list(neighbours), 1], s=90, facecolors="none",
                         edgecolors="grey", label="nearest (L2)")
    axes.legend(fontsize=8)
    axes.set_title("t-SNE of object features")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(buffer).convert("RGB"))


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"class_{index}"


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# A figure is as wide as its picture (inline-table, caption as table-caption), so long captions
# wrap under the picture instead of widening the figure and pushing the next one to a new row.
PAGE_STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}h2{margin-top:1.6em;border-bottom:1px solid #ccc}"
              "figure{display:inline-table;margin:0 1em 1em 0;vertical-align:top}"
              "img{display:block;max-width:640px}figcaption{display:table-caption;caption-side:bottom;"
              "font-size:.85em}figcaption b{display:block}p.note{color:#666}")


def html_page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """The page: every section's figures inline (base64 PNG), escaped text, no outside files."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
        for figure in section.figures:
            data = base64.b64encode(png_bytes(figure.image)).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(figure.title, quote=True)}' "
                         f"src='data:image/png;base64,{data}'><figcaption><b>{html.escape(figure.title)}</b>"
                         f"{html.escape(figure.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
