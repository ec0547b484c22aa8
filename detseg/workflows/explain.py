"""Explain workflow: a finished run's Keras model on image files -> PNGs and one HTML page per image.

    results = explain_run("runs/shapes", ["a.jpg", "b.png"], "explain/")
    results[0].page          # explain/a.html: every method, pictures inline
    results[0].pngs          # explain/a/<target>_<method>.png, ...

Each image is letterboxed into the model frame (`models.ops.letterbox`) and explained
there. Per image, the targets of `models.explain.targets` (cls+loc: the class; detectors:
each of the best `max_detections` detections, its own maps; semantic: each predicted
class's mean probability over its region) get saliency, guided backprop and deconvnet
side by side, Grad-CAM at `grad_cam_layer`, and occlusion sensitivity. The model itself
gets, once for all images: first-layer filters, the maximally activating patches of
`patch_channel` (default: the strongest) at `patch_layer` over the images, a t-SNE of
the objects' bottleneck features (coloured by class) with the nearest neighbours of the
first object, and class model visualizations (the cls+loc head's classes; an
EfficientNet-Lite ImageNet class with `imagenet_class`). Model pictures go to `out/model/`; every page shows them too.
Every file is written atomically (`detseg.core.atomic_files`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detseg.core.atomic_files import write_text_atomic
from detseg.workflows.explain_page import Figure, Section, html_page
from detseg.workflows.explain_sections import image_sections, model_sections
from detseg.workflows.predict import decode_image, output_stems

Log = Callable[[str], None]
IMAGE_METHODS = ("saliency", "guided_backprop", "deconvnet", "grad_cam", "occlusion")
MODEL_METHODS = ("filters", "patches", "embedding", "class_model")
METHODS = IMAGE_METHODS + MODEL_METHODS


@dataclass(frozen=True)
class ExplainOptions:
    """What `explain_run` shows and how (module docstring); defaults suit a 64-256 px model."""

    methods: tuple[str, ...] = METHODS
    max_detections: int = 3
    min_score: float = 0.05
    class_index: int | None = None
    grad_cam_layer: str = "P4"
    occlusion_patch: int = 16
    occlusion_stride: int = 8
    patch_layer: str = "P3"
    patch_channel: int | None = None  # None: the layer's strongest channel over the images
    top_patches: int = 9
    ascent_steps: int = 64
    ascent_l2: float = 1e-4
    ascent_jitter: int = 2
    ascent_blur_every: int = 4
    imagenet_classifier: str = "efficientnet_lite0"
    imagenet_class: int | None = None
    seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown explanation method(s) {', '.join(unknown)}; expected {', '.join(METHODS)}")
        if self.max_detections < 1 or self.top_patches < 1 or self.ascent_steps < 1:
            raise ValueError("max_detections, top_patches and ascent_steps must be >= 1")


class ExplainOptionError(ValueError):
    """An option that does not fit the model; `option` is the `ExplainOptions` field at fault."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


def check_options(model, options: ExplainOptions) -> None:
    """Layers and class index checked against the model before anything is computed or written."""
    from detseg.models.explain.layer_hooks import find_layer

    for option in ("grad_cam_layer", "patch_layer"):
        try:
            find_layer(model, getattr(options, option))
        except ValueError as error:
            raise ExplainOptionError(option, str(error)) from None
    classes = getattr(model, "num_classes", None)
    if options.class_index is not None and isinstance(classes, int) and options.class_index >= classes:
        raise ExplainOptionError("class_index", f"{options.class_index} is out of range: the model has "
                                                f"{classes} classes (0..{classes - 1})")


@dataclass
class ExplainedImage:
    """One image's page, its PNGs and the labels of what was explained."""

    path: Path
    page: Path
    pngs: list[Path] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


def explain_run(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], out: str | os.PathLike,
                options: ExplainOptions = ExplainOptions(), log: Log | None = None) -> list[ExplainedImage]:
    """Explain `run_dir`'s model on `images`, writing into `out` (module docstring)."""
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images to explain")
    originals = [decode_image(p) for p in paths]  # a bad file is named before the model loads
    from detseg.models.ops.letterbox import letterbox_image
    from detseg.training.run_model import load_run_model

    run = load_run_model(run_dir)
    check_options(run.model, options)
    frames = np.stack([letterbox_image(image, run.image_size)[0].numpy() for image in originals])
    out = Path(out)
    say = log or (lambda message: None)
    model_part = model_sections(run.model, frames, run.label_map.names, options, out / "model", say)
    results = []
    for path, stem, frame in zip(paths, output_stems(paths), frames):
        sections, pngs, labels = image_sections(run.model, frame, run.label_map.names, options, out / stem)
        for section in model_part.sections:
            sections.append(section)
        title = f"detseg explain: {path.name}"
        intro = (f"Run {Path(run_dir)} ({run.task}, {run.image_size} px frame). The image is letterboxed into "
                 f"the model's frame; every map is in that frame.")
        page = write_text_atomic(html_page(title, sections, intro), out / f"{stem}.html")
        results.append(ExplainedImage(path, page, pngs + model_part.pngs, labels))
        say(f"{path}: {len(labels)} target(s) explained -> {page}")
    return results


__all__ = ["ExplainOptions", "ExplainedImage", "Figure", "METHODS", "Section", "explain_run"]
