"""The sections of a `detseg explain` page: per image (one per target) and per model (once for all images).

`image_sections` runs the per-image methods of `models.explain.attribution` on each
target of one frame; `model_sections` runs the model's own methods (filters, patches,
embedding, class models) over all frames. Both save each picture as a PNG (atomically)
and return the page sections that show them; `detseg.workflows.explain` assembles pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detseg.data.draw import image_grid, save_png
from detseg.workflows.explain_page import (Figure, Section, all_zero, boxed_picture, enlarged, filters_picture,
                                           gradient_picture, heatmap_picture, scatter_picture, signed_picture)

MAX_OBJECTS_PER_IMAGE = 20
NEIGHBOURS = 5
CLASS_MODELS_SHOWN = 4
PATCH_SIDE = 96  # display side of the largest patch, px
FLAT_SCORE = 1e-3  # a class model whose score rose less than this shows a note


@dataclass
class ModelPart:
    """The model's sections and the PNGs written for them."""

    sections: list[Section] = field(default_factory=list)
    pngs: list[Path] = field(default_factory=list)


def _saved(figure: Figure, path: Path, pngs: list[Path]) -> Figure:
    pngs.append(save_png(figure.image, path))
    return figure


def image_sections(model, frame: np.ndarray, class_names: Sequence[str], options, folder: Path
                   ) -> tuple[list[Section], list[Path], list[str]]:
    """One section per target of `frame` (float32 `[S, S, 3]`): its pictures, saved under `folder`."""
    from detseg.models.explain import attribution
    from detseg.models.explain.targets import explanation_targets

    targets = explanation_targets(model, frame, class_names, options.max_detections, options.min_score,
                                  options.class_index)
    if not targets:
        return [Section("Detections", note=f"no detection scored at least {options.min_score} (nor the model's "
                                           f"own NMS score threshold): nothing to explain in this image "
                                           f"(lower --min-score, or train longer)")], [], []
    sections, pngs = [], []
    for number, target in enumerate(targets, start=1):
        figures = [Figure("input", boxed_picture(frame, target.box, target.label), "the model's frame")]
        if target.region is not None:
            figures.append(Figure("region", heatmap_picture(frame, target.region.astype(np.float32)),
                                  "pixels the mean score is taken over"))
        methods = {
            "saliency": lambda: _heat_figure("saliency", frame, attribution.saliency_map(target, frame), target,
                                             "|d score / d pixel|, max over channels"),
            "guided_backprop": lambda: _gradient_figure(
                "guided backprop", attribution.guided_backprop(model, target, frame),
                "positive gradients through active units"),
            "deconvnet": lambda: _gradient_figure("deconvnet", attribution.deconvnet(model, target, frame),
                                                  "positive gradients, no forward gate"),
            "grad_cam": lambda: _heat_figure(
                f"Grad-CAM at {options.grad_cam_layer}", frame,
                attribution.grad_cam(model, target, frame, options.grad_cam_layer)[0], target,
                "feature maps weighted by their mean gradient"),
            "occlusion": lambda: _occlusion_figure(attribution.occlusion_map(
                target, frame, options.occlusion_patch, options.occlusion_stride), frame, target, options),
        }
        for method in (m for m in options.methods if m in methods):
            figures.append(_saved(methods[method](), folder / f"{number}_{method}.png", pngs))
        pngs.append(save_png(figures[0].image, folder / f"{number}_input.png"))
        sections.append(Section(f"Target {number}: {target.label}", figures))
    return sections, pngs, [t.label for t in targets]


def _heat_figure(title: str, frame, heat: np.ndarray, target, caption: str) -> Figure:
    if all_zero(heat):
        caption += " (all zero: nothing here raises this score)"
    return Figure(title, heatmap_picture(frame, heat, target.box, target.label), caption)


def _gradient_figure(title: str, gradient: np.ndarray, caption: str) -> Figure:
    if all_zero(gradient):
        caption += " (all zero: no positive gradient gets back to the pixels through the rectifiers)"
    return Figure(title, gradient_picture(gradient), caption)


def _occlusion_figure(drops: np.ndarray, frame, target, options) -> Figure:
    caption = (f"score drop under a grey {options.occlusion_patch} px square, stride {options.occlusion_stride} "
               f"(red: the score falls, blue: it rises; largest {float(np.abs(drops).max()):.3f})")
    return Figure("occlusion", signed_picture(drops, target.box, target.label, frame), caption)


def model_sections(model, frames: np.ndarray, class_names: Sequence[str], options, folder: Path,
                   log: Callable[[str], None]) -> ModelPart:
    """The model's own sections over all `frames` float32 `[N, S, S, 3]` (filters, patches, embedding, class models)."""
    part = ModelPart()
    builders = {"filters": _filters_section, "patches": _patches_section, "embedding": _embedding_section,
                "class_model": _class_model_section}
    for method in (m for m in options.methods if m in builders):
        log(f"model: {method}")
        part.sections.append(builders[method](model, frames, class_names, options, folder, part.pngs))
    return part


def _filters_section(model, frames, class_names, options, folder, pngs) -> Section:
    from detseg.models.explain.features import first_layer_filters

    filters = first_layer_filters(model)
    figure = Figure(f"{len(filters)} filters", filters_picture(filters), "each scaled to its own range")
    return Section("First-layer filters", [_saved(figure, folder / "filters.png", pngs)])


def _patches_section(model, frames, class_names, options, folder, pngs) -> Section:
    from detseg.models.explain.features import maximally_activating_patches

    patches = maximally_activating_patches(model, options.patch_layer, options.patch_channel, frames,
                                           options.top_patches)
    factor = max(1, round(PATCH_SIDE / max(max(p.pixels.shape[:2]) for p in patches)))  # one scale for all
    grid = image_grid([enlarged(p.pixels, factor=factor) for p in patches], 3)
    caption = "; ".join(f"image {p.image_index + 1} cell {p.cell}: {p.activation:.3g}" for p in patches)
    chosen = "" if options.patch_channel is not None else " (its strongest)"
    figure = Figure(f"channel {patches[0].channel}{chosen} of {options.patch_layer}", grid,
                    f"receptive fields of the strongest cells, strongest first, cut at the image border "
                    f"({caption})")
    return Section("Maximally activating patches", [_saved(figure, folder / "patches.png", pngs)])


def _embedding_section(model, frames, class_names, options, folder, pngs) -> Section:
    from detseg.models.explain.features import nearest_neighbours, object_features, tsne_embedding

    objects, classes = scene_objects(model, frames, options.min_score)
    title = "Feature embedding (t-SNE) and nearest neighbours"
    if len(objects) < 4:
        return Section(title, note=f"t-SNE needs at least 4 objects; these images give {len(objects)}")
    features = object_features(model, frames, objects)
    points = tsne_embedding(features, seed=options.seed)
    near = nearest_neighbours(features, 0, NEIGHBOURS)
    crops = [_crop(frames[objects[i][0]], objects[i][1]) for i in [0, *near]]
    figures = [_saved(Figure("t-SNE", scatter_picture(points, classes, class_names, 0, near),
                             f"{len(objects)} objects, bottleneck (P5) features, coloured by class"),
                      folder / "embedding.png", pngs),
               _saved(Figure("query and its nearest neighbours", image_grid(crops, len(crops)),
                             "first: the query object; then by L2 distance of features"),
                      folder / "neighbours.png", pngs)]
    return Section(title, figures)


def _class_model_section(model, frames, class_names, options, folder, pngs) -> Section:
    from detseg.models.clsloc.classification_localization import ClassificationLocalizationModel
    from detseg.models.explain.class_model import (AscentOptions, class_model_visualization, classifier_logit,
                                                   clsloc_class_logit, imagenet_classifier)

    ascent = AscentOptions(steps=options.ascent_steps, l2=options.ascent_l2, jitter=options.ascent_jitter,
                           blur_every=options.ascent_blur_every, seed=options.seed)
    figures, notes = [], []
    if isinstance(model, ClassificationLocalizationModel):
        for index in range(min(model.num_classes, CLASS_MODELS_SHOWN)):
            result = class_model_visualization(clsloc_class_logit(model, index), frames.shape[1:3], ascent)
            name = class_names[index] if index < len(class_names) else index
            figures.append(_saved(Figure(f"cls+loc head: {name}", enlarged(result.image), _ascent_caption(result)),
                                  folder / f"class_model_{index}.png", pngs))
    else:
        notes.append("the cls+loc head's class models are for classification + localization runs")
    if options.imagenet_class is not None:
        classifier = imagenet_classifier(options.imagenet_classifier)
        result = class_model_visualization(classifier_logit(classifier, options.imagenet_class),
                                           classifier.input_shape[1:3], ascent)
        figures.append(_saved(Figure(f"{options.imagenet_classifier} ImageNet class {options.imagenet_class}",
                                     result.image, _ascent_caption(result)),
                              folder / f"class_model_imagenet_{options.imagenet_class}.png", pngs))
    else:
        notes.append("an ImageNet class model is drawn with --imagenet-class")
    return Section("Class model visualization (gradient ascent, L2, jitter, blur)", figures, "; ".join(notes))


def _ascent_caption(result) -> str:
    caption = f"logit {result.scores[0]:.3g} -> {result.scores[-1]:.3g}"
    if result.scores[-1] - result.scores[0] < FLAT_SCORE:
        caption += " (flat: this logit barely depends on the pixels, so the image stays near grey)"
    return caption


def scene_objects(model, frames: np.ndarray, min_score: float) -> tuple[list[tuple[int, tuple]], list[int]]:
    """Objects the model sees in `frames`: `[(image index, xyxy box)]` and their class indices.

    Detectors: their detections scoring at least `min_score`; cls+loc: the predicted box
    and class; semantic: the bounding box of each predicted class's pixels.
    """
    import tensorflow as tf

    from detseg.models.clsloc.classification_localization import ClassificationLocalizationModel
    from detseg.models.segmentation.semantic_segmenter import SemanticSegmenter

    objects, classes = [], []
    for index, frame in enumerate(frames):
        batch = tf.constant(frame[np.newaxis])
        if isinstance(model, ClassificationLocalizationModel):
            found = model(batch, training=False)
            objects.append((index, tuple(found["box"][0].numpy())))
            classes.append(int(np.argmax(found["class_probabilities"][0])))
        elif isinstance(model, SemanticSegmenter):
            class_map = np.argmax(model(batch, training=False)[0], axis=-1)
            for value in sorted(set(np.unique(class_map).tolist()) - {0}):
                rows, cols = np.nonzero(class_map == value)
                objects.append((index, (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)))
                classes.append(value - 1)
        else:
            found = {k: v[0].numpy() for k, v in model.predict_outputs(batch).items()}
            for k in range(min(int(found["num_detections"]), MAX_OBJECTS_PER_IMAGE)):
                if found["scores"][k] >= min_score:
                    objects.append((index, tuple(found["boxes"][k])))
                    classes.append(int(found["classes"][k]))
    return objects, classes


def _crop(frame: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return enlarged(np.clip(frame[y0:y1, x0:x1], 0, 255).astype(np.uint8), 96)
