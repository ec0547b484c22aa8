"""The embedded synthetic shapes dataset: COCO instances + semantic masks, made offline.

Layout written by `generate_synthetic(out_dir, ...)`:

    out_dir/images/synth_000000.png            RGB, image_size x image_size
    out_dir/masks/synth_000000.png             mode "L": 0 = background, else the COCO
                                               category id of the visible object there
    out_dir/annotations/instances_{train,val,test}.json
    out_dir/synthetic.json                     manifest of the parameters (for reuse)

Each image holds 0-6 shapes (0-`max_shapes`; diameters from `min_shape_size` to 55% of the side) (circle/ellipse, rectangle, triangle) of sizes spanning COCO
small, medium and large at 256 px, on a textured noisy background. Later shapes paint
over earlier ones: an instance's mask is its VISIBLE pixels and its bbox (COCO xywh) the
tight box of that mask. Image `i` depends only on `(seed, i)`, never on `num_images`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from detseg.core.contract import SEMANTIC_BACKGROUND
from detseg.data.coco import encode_mask, read_json
from detseg.data.errors import DatasetError, OptionError
from detseg.data.output_paths import check_output_folder, write_folder_atomic

# Bump when the generator's output changes, so `ensure_synthetic` does not reuse old data.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic.json"
SPLIT_NAMES = ("train", "val", "test")
CATEGORIES = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
CIRCLE_ID, RECTANGLE_ID, TRIANGLE_ID = 1, 2, 3
NO_OWNER = -1  # owner map value where no shape is painted

MAX_SHAPES = 6  # default most shapes per image
MAX_SHAPES_LIMIT = 20
MIN_SHAPE_SIZE = 0.04  # default smallest shape diameter, as a fraction of the image side
MAX_SHAPE_SIZE = 0.55  # largest shape diameter, as a fraction of the image side
EMPTY_IMAGE_PROBABILITY = 0.05
MIN_VISIBLE_FRACTION = 0.3  # drop instances occluded beyond this
MIN_VISIBLE_PIXELS = 20
MIN_COLOUR_DISTANCE = 60.0  # RGB distance of a shape's colour from the background under it
_SPLIT_STREAM = 1_000_003  # a second rng stream, apart from the per-image ones
_PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


@dataclass(frozen=True)
class SyntheticParameters:
    """Everything the written files depend on; stored as the manifest."""

    num_images: int
    image_size: int
    seed: int
    fractions: tuple[float, float, float]
    max_shapes: int = MAX_SHAPES
    min_shape_size: float = MIN_SHAPE_SIZE
    generator_version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise _parameter_error("num_images", f"must be >= 1, got {self.num_images}")
        if not 1 <= self.max_shapes <= MAX_SHAPES_LIMIT:
            raise _parameter_error("max_shapes", f"must be 1..{MAX_SHAPES_LIMIT}, got {self.max_shapes}")
        if not 0 < self.min_shape_size <= MAX_SHAPE_SIZE:
            raise _parameter_error("min_shape_size", f"must be in (0, {MAX_SHAPE_SIZE}] "
                                   f"(a fraction of the image side), got {self.min_shape_size}")
        if self.image_size < 32:
            raise _parameter_error("image_size", f"must be >= 32 px, got {self.image_size}")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6:
            raise DatasetError(f"synthetic dataset: fractions must be 3 non-negative numbers "
                               f"summing to 1 (train, val, test), got {list(self.fractions)}")

    @classmethod
    def of(cls, num_images, image_size, seed, fractions, max_shapes=MAX_SHAPES,
           min_shape_size=MIN_SHAPE_SIZE) -> "SyntheticParameters":
        return cls(int(num_images), int(image_size), int(seed), tuple(float(f) for f in fractions),
                   int(max_shapes), float(min_shape_size))

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["fractions"] = list(self.fractions)
        return payload


def _parameter_error(parameter: str, problem: str) -> OptionError:
    """`synthetic dataset: num_images must be ...` (`--num-images` on the command line)."""
    return OptionError(f"synthetic dataset: {{{parameter}}} {problem}", **{parameter: parameter})


@dataclass(frozen=True)
class Shape:
    """One shape: its category id, full (unoccluded) mask `bool [S, S]` and fill colour."""

    category_id: int
    mask: np.ndarray
    colour: np.ndarray  # float32 [3], RGB 0..255
    shading: np.ndarray  # float32 [2], brightness change per pixel along x and y


# ----------------------------------------------------------------------------- rendering

def _smooth_field(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """`float32 [size, size, 3]` smooth random colour variation of roughly +-amplitude."""
    grid = rng.uniform(-amplitude, amplitude, (cells, cells, 3)) + 128.0
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(small.resize((size, size), Image.BICUBIC), np.float32) - 128.0


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background, `float32 [size, size, 3]` in about 0..255.

    A base colour, a linear gradient, low- and mid-frequency colour blobs and a few
    faint lines and ellipses: so objects cannot be found by a colour threshold.
    """
    base = rng.uniform(50, 205, 3)
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5)[:, None]
    slope = rng.uniform(-60, 60, (2, 3)).astype(np.float32)
    image = (base.astype(np.float32) + (ramp * slope[0])[None, :, :]) + (ramp * slope[1])[:, None, :]
    image = image + _smooth_field(rng, size, int(rng.integers(2, 6)), 45.0)
    image = image + _smooth_field(rng, size, int(rng.integers(12, 24)), 15.0)
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
    clutter = canvas.copy()
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(2, 7))):
        points = [tuple(p) for p in rng.uniform(0, size, (2, 2)).tolist()]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
        else:
            (x0, y0), (x1, y1) = points
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=colour)
    blended = Image.blend(canvas, clutter, float(rng.uniform(0.12, 0.25)))
    return np.asarray(blended, np.float32)


def _shape_polygon(rng: np.random.Generator, category_id: int, centre: np.ndarray,
                   extent: float) -> np.ndarray:
    """`float [P, 2]` xy vertices of a shape whose geometric-mean diameter is about `extent`."""
    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
    half_w, half_h = extent * np.sqrt(aspect) / 2, extent / np.sqrt(aspect) / 2
    angle = rng.uniform(0, np.pi)
    if category_id == CIRCLE_ID:
        if rng.random() < 0.4:  # a true circle now and then
            half_w = half_h = extent / 2
        steps = int(np.clip(extent, 16, 64))
        t = np.linspace(0, 2 * np.pi, steps, endpoint=False)
        local = np.stack([half_w * np.cos(t), half_h * np.sin(t)], axis=1)
    elif category_id == RECTANGLE_ID:
        if rng.random() < 0.5:  # half of them axis-aligned
            angle = 0.0
        local = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    else:
        # Three vertices about 120 degrees apart, jittered, so no triangle is degenerate.
        vertex_angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        vertex_angles += rng.uniform(-0.45, 0.45, 3)
        radius = 0.75 * rng.uniform(0.8, 1.0, 3)
        local = np.stack([half_w * 2 * radius * np.cos(vertex_angles),
                          half_h * 2 * radius * np.sin(vertex_angles)], axis=1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return local @ rotation.T + centre


def _rasterize(polygon: np.ndarray, size: int) -> np.ndarray:
    """`bool [size, size]`: the pixels the polygon covers."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(canvas, bool)


def _pick_colour(rng: np.random.Generator, background_under: np.ndarray) -> np.ndarray:
    """A random colour at least MIN_COLOUR_DISTANCE from the mean background under the shape."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(10):
        if np.linalg.norm(colour - background_under) >= MIN_COLOUR_DISTANCE:
            break
        colour = rng.uniform(0, 255, 3)
    return colour.astype(np.float32)


def sample_shapes(rng: np.random.Generator, size: int, background: np.ndarray,
                  max_shapes: int = MAX_SHAPES, min_shape_size: float = MIN_SHAPE_SIZE) -> list[Shape]:
    """0..max_shapes random shapes in painting order (later ones paint over earlier ones),
    diameters log-uniform in [min_shape_size, MAX_SHAPE_SIZE] of the image side (>= 8 px)."""
    count = 0 if rng.random() < EMPTY_IMAGE_PROBABILITY else int(rng.integers(1, max_shapes + 1))
    smallest, largest = max(8.0, min_shape_size * size), MAX_SHAPE_SIZE * size
    shapes = []
    for _ in range(count):
        category_id = int(rng.choice([CIRCLE_ID, RECTANGLE_ID, TRIANGLE_ID]))
        extent = float(np.exp(rng.uniform(np.log(smallest), np.log(largest))))
        centre = rng.uniform(0.05 * size, 0.95 * size, 2)
        mask = _rasterize(_shape_polygon(rng, category_id, centre, extent), size)
        if not mask.any():
            continue
        colour = _pick_colour(rng, background[mask].mean(axis=0))
        shading = rng.uniform(-40, 40, 2).astype(np.float32) / max(extent, 1.0)
        shapes.append(Shape(category_id, mask, colour, shading))
    return shapes


def visible_shapes(shapes: list[Shape], size: int) -> tuple[list[int], np.ndarray]:
    """Indices of the shapes kept (enough of each visible) and the owner map: `int32 [S, S]`,
    the index of the shape visible at each pixel, NO_OWNER where none.

    Dropping a shape only uncovers the others, so repeating until nothing more is
    dropped converges, and the image is then painted with the kept shapes only: no
    object in the picture lacks an annotation.
    """
    keep = list(range(len(shapes)))
    while True:
        owner = np.full((size, size), NO_OWNER, np.int32)
        for k in keep:
            owner[shapes[k].mask] = k
        counts = np.bincount(owner[owner != NO_OWNER], minlength=len(shapes))
        kept = [k for k in keep if counts[k] >= MIN_VISIBLE_PIXELS
                and counts[k] >= MIN_VISIBLE_FRACTION * shapes[k].mask.sum()]
        if kept == keep:
            return keep, owner
        keep = kept


def paint(background: np.ndarray, shapes: list[Shape], keep: list[int],
          rng: np.random.Generator) -> np.ndarray:
    """Paint the kept shapes over the background in order, add pixel noise: `uint8 [S, S, 3]`."""
    image = background.copy()
    for k in keep:
        shape = shapes[k]
        rows, cols = np.nonzero(shape.mask)
        # A brightness ramp across the shape, so it is not one flat colour.
        ramp = (cols - cols.mean()) * shape.shading[0] + (rows - rows.mean()) * shape.shading[1]
        image[rows, cols] = shape.colour + ramp[:, None]
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(4.0, 12.0))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_image(seed: int, index: int, size: int, max_shapes: int = MAX_SHAPES,
                 min_shape_size: float = MIN_SHAPE_SIZE) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Image `index` of the dataset with `seed` (and the shape count and size options).

    Returns `(image uint8 [S, S, 3], category ids [K], instance masks bool [K, S, S])`,
    the masks being visible pixels only, in painting order.
    """
    rng = np.random.default_rng([seed, index])
    background = render_background(rng, size)
    shapes = sample_shapes(rng, size, background, max_shapes, min_shape_size)
    keep, owner = visible_shapes(shapes, size)
    image = paint(background, shapes, keep, rng)
    masks = np.stack([owner == k for k in keep]) if keep else np.zeros((0, size, size), bool)
    return image, [shapes[k].category_id for k in keep], masks


# ----------------------------------------------------------------------------- writing

def instance_annotations(masks: np.ndarray, category_ids: list[int], image_id: int,
                         first_id: int) -> list[dict[str, Any]]:
    """COCO annotation dicts for visible masks `bool [K, S, S]`: tight xywh bbox, RLE, area."""
    annotations = []
    for offset, (mask, category_id) in enumerate(zip(masks, category_ids)):
        rows, cols = np.nonzero(mask)
        x0, y0 = int(cols.min()), int(rows.min())
        bbox = [float(x0), float(y0), float(cols.max() + 1 - x0), float(rows.max() + 1 - y0)]
        annotations.append({"id": first_id + offset, "image_id": image_id,
                            "category_id": int(category_id), "bbox": bbox,
                            "area": float(rows.size), "iscrowd": 0,
                            "segmentation": encode_mask(mask)})
    return annotations


def semantic_label_map(masks: np.ndarray, category_ids: list[int]) -> np.ndarray:
    """`uint8 [S, S]`: the category id of the visible instance per pixel, SEMANTIC_BACKGROUND elsewhere."""
    label_map = np.full(masks.shape[1:], SEMANTIC_BACKGROUND, np.uint8)
    for mask, category_id in zip(masks, category_ids):
        label_map[mask] = category_id  # visible masks are disjoint: order does not matter
    return label_map


def split_assignment(num_images: int, fractions: tuple[float, float, float],
                     seed: int) -> dict[str, list[int]]:
    """Image indices per split: a seeded shuffle cut by `fractions`, each split sorted."""
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(num_images)
    num_train = int(round(fractions[0] * num_images))
    num_val = min(int(round(fractions[1] * num_images)), num_images - num_train)
    cuts = {"train": order[:num_train], "val": order[num_train:num_train + num_val],
            "test": order[num_train + num_val:]}
    return {name: sorted(int(i) for i in indices) for name, indices in cuts.items()}


def image_file_name(index: int) -> str:
    return f"synth_{index:06d}.png"


def semantic_mask_path(dataset_dir: str | os.PathLike, file_name: str) -> Path:
    """Where the semantic label PNG of image `file_name` lives in a synthetic dataset."""
    return Path(dataset_dir) / "masks" / Path(file_name).name


def annotation_paths(dataset_dir: str | os.PathLike) -> dict[str, Path]:
    root = Path(dataset_dir)
    return {name: root / "annotations" / f"instances_{name}.json" for name in SPLIT_NAMES}


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Write `uint8 [H, W, 3]` RGB or `uint8 [H, W]` grey as PNG.

    OpenCV's encoder with fast RLE compression: noisy images make zlib slow, and this is
    ~3x faster than PIL at about the same size (the PNG decodes the same everywhere).
    """
    bgr = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr), _PNG_OPTIONS)
    if not ok:
        raise DatasetError(f"{path}: PNG encoding failed")
    path.write_bytes(encoded.tobytes())


def _write_dataset(root: Path, params: SyntheticParameters) -> None:
    """Write every file of the dataset under `root` (a fresh, empty folder)."""
    for folder in ("images", "masks", "annotations"):
        (root / folder).mkdir(parents=True)
    images, annotations_by_image = {}, {}
    next_annotation_id = 1
    for index in range(params.num_images):
        image, category_ids, masks = render_image(params.seed, index, params.image_size, params.max_shapes,
                                                  params.min_shape_size)
        name, image_id = image_file_name(index), index + 1
        write_png(image, root / "images" / name)
        write_png(semantic_label_map(masks, category_ids), root / "masks" / name)
        images[index] = {"id": image_id, "file_name": name,
                         "width": params.image_size, "height": params.image_size}
        annotations_by_image[index] = instance_annotations(masks, category_ids, image_id,
                                                           next_annotation_id)
        next_annotation_id += len(category_ids)
    info = {"description": "detseg synthetic shapes", **params.to_dict()}
    for split, indices in split_assignment(params.num_images, params.fractions, params.seed).items():
        payload = {"info": {**info, "split": split},
                   "images": [images[i] for i in indices],
                   "annotations": [a for i in indices for a in annotations_by_image[i]],
                   "categories": [dict(c) for c in CATEGORIES]}
        with open(annotation_paths(root)[split], "w", encoding="utf-8") as f:
            json.dump(payload, f)
    # The manifest goes last: its presence says the dataset is complete.
    with open(root / MANIFEST_NAME, "w", encoding="utf-8") as f:
        json.dump(params.to_dict(), f, indent=2)


def _is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def generate_synthetic(out_dir: str | os.PathLike, num_images: int = 200, image_size: int = 256,
                       seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                       overwrite: bool = False, max_shapes: int = MAX_SHAPES,
                       min_shape_size: float = MIN_SHAPE_SIZE) -> dict[str, Path]:
    """Write the synthetic shapes dataset to `out_dir`; returns `{split: annotations JSON path}`.

    Files are written into a temporary sibling folder, then renamed to `out_dir`, so a
    reader never sees half a dataset. The same arguments give byte-identical files.
    Raises `DatasetError` if `out_dir` exists and is not empty, unless `overwrite`.
    """
    params = SyntheticParameters.of(num_images, image_size, seed, fractions, max_shapes, min_shape_size)
    out_dir = check_output_folder(out_dir, overwrite)
    write_folder_atomic(out_dir, lambda staging: _write_dataset(staging, params), overwrite)
    return annotation_paths(out_dir)


def read_manifest(dataset_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The parameters a synthetic dataset was made with, or None if it has no valid manifest."""
    try:
        manifest = read_json(Path(dataset_dir) / MANIFEST_NAME)
    except DatasetError:  # missing or unreadable
        return None
    return manifest if isinstance(manifest, dict) else None


def ensure_synthetic(out_dir: str | os.PathLike, num_images: int = 200, image_size: int = 256,
                     seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                     max_shapes: int = MAX_SHAPES, min_shape_size: float = MIN_SHAPE_SIZE
                     ) -> dict[str, Path]:
    """Reuse the synthetic dataset in `out_dir` if it was made with these parameters, else make it.

    A folder with a synthetic manifest but other parameters is regenerated in place; a
    non-empty folder without a manifest is not ours to replace: `DatasetError`.
    """
    out_dir = Path(out_dir)
    wanted = SyntheticParameters.of(num_images, image_size, seed, fractions, max_shapes, min_shape_size)
    manifest = read_manifest(out_dir)
    paths = annotation_paths(out_dir)
    if manifest == wanted.to_dict() and all(p.is_file() for p in paths.values()):
        return paths
    if _is_non_empty_dir(out_dir) and manifest is None:
        raise DatasetError(f"{out_dir}: not empty and not a detseg synthetic dataset "
                           f"(no {MANIFEST_NAME}); refusing to replace it")
    try:
        return generate_synthetic(out_dir, num_images, image_size, seed, fractions,
                                  overwrite=manifest is not None, max_shapes=max_shapes,
                                  min_shape_size=min_shape_size)
    except DatasetError:
        # Another process may have written the same dataset meanwhile: reuse it if so.
        if read_manifest(out_dir) == wanted.to_dict():
            return paths
        raise
