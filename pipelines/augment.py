"""Box- and mask-aware augmentation with albumentations, deterministic under a seed.

`AugmentConfig` (a frozen dataclass, YAML-friendly) says which transforms run and how
strongly; `build_augmentation` turns it into an `albumentations.Compose`; `BoxMaskAugmenter`
applies it to one example in the ORIGINAL image frame (before the letterbox), seeded per
call, so the same seed always gives the same output, whatever thread runs it.

Order: bbox-safe random crop (never cuts an object), affine scale + translate, flips,
colour jitter, Gaussian blur. Boxes are xyxy pixels (albumentations "pascal_voc") and
carry an object index: albumentations 2.0.8 drops boxes (crops, `min_visibility`) WITHOUT
dropping their masks, so masks and classes are re-selected by the kept indices.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, fields

import albumentations as A
import cv2
import numpy as np

from detseg.core.contract import PAD_PIXEL_VALUE

OBJECT_INDEX_FIELD = "object_index"
ATTEMPTS_TO_KEEP_OBJECTS = 3  # draws tried before an image that had objects is left unaugmented


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation does. A probability of 0 disables that transform.

    `scale_range` multiplies the image size; `translate_range` is a fraction of the image
    size along each axis; `brightness`/`contrast`/`saturation` are +- fractions and `hue`
    a +- fraction of the hue circle (<= 0.5); `blur_limit` is the largest odd Gaussian
    kernel; a box keeping less than `min_visibility` of its area in view is dropped.
    `enabled=False` (see `AugmentConfig.off()`) turns everything off, e.g. for evaluation.
    """

    enabled: bool = True
    horizontal_flip: float = 0.5
    vertical_flip: float = 0.0
    crop: float = 0.3
    affine: float = 0.5
    scale_range: tuple[float, float] = (0.75, 1.25)
    translate_range: tuple[float, float] = (-0.1, 0.1)
    color_jitter: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    blur: float = 0.1
    blur_limit: int = 5
    min_visibility: float = 0.3

    def __post_init__(self) -> None:
        for name in ("scale_range", "translate_range"):  # YAML gives lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("horizontal_flip", "vertical_flip", "crop", "affine", "color_jitter", "blur",
                          "min_visibility") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name} must be in [0, 1], got {value}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"AugmentConfig.scale_range must be (low, high) with 0 < low <= high, "
                             f"got {self.scale_range}")
        if len(self.translate_range) != 2 or not -1 <= self.translate_range[0] <= self.translate_range[1] <= 1:
            raise ValueError(f"AugmentConfig.translate_range must be (low, high) within [-1, 1], "
                             f"got {self.translate_range}")
        if not 0.0 <= self.hue <= 0.5 or min(self.brightness, self.contrast, self.saturation) < 0:
            raise ValueError("AugmentConfig colour ranges must be >= 0 (hue <= 0.5)")
        if self.blur_limit < 3 or self.blur_limit % 2 == 0:
            raise ValueError(f"AugmentConfig.blur_limit must be an odd number >= 3, got {self.blur_limit}")

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(enabled=False)


def build_augmentation(config: AugmentConfig, mask_fill: int = 0) -> A.Compose | None:
    """The albumentations pipeline of `config`, or None when nothing would run.

    `mask_fill` is the mask value of pixels exposed by the affine transform (0 for instance
    masks, the ignore value for semantic maps); exposed image pixels get `PAD_PIXEL_VALUE`.
    """
    if not config.enabled:
        return None
    transforms = []
    if config.crop > 0:
        transforms.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=config.crop))
    if config.affine > 0:
        transforms.append(A.Affine(scale=config.scale_range, translate_percent=config.translate_range,
                                   keep_ratio=True, interpolation=cv2.INTER_LINEAR,
                                   mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                                   fill=PAD_PIXEL_VALUE, fill_mask=mask_fill, p=config.affine))
    if config.horizontal_flip > 0:
        transforms.append(A.HorizontalFlip(p=config.horizontal_flip))
    if config.vertical_flip > 0:
        transforms.append(A.VerticalFlip(p=config.vertical_flip))
    if config.color_jitter > 0:
        transforms.append(A.ColorJitter(brightness=config.brightness, contrast=config.contrast,
                                        saturation=config.saturation, hue=config.hue, p=config.color_jitter))
    if config.blur > 0:
        transforms.append(A.GaussianBlur(blur_limit=(3, config.blur_limit), p=config.blur))
    if not transforms:
        return None
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=[OBJECT_INDEX_FIELD],
                               min_visibility=config.min_visibility, clip=True)
    with warnings.catch_warnings():
        # Colour-only configs move no boxes; albumentations warns that the box processor idles.
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
        return A.Compose(transforms, bbox_params=bbox_params, seed=0)


@dataclass(frozen=True)
class AugmentedExample:
    """One augmented example in its (possibly cropped) frame.

    `image` `uint8 [H, W, 3]`; `boxes` `float32 [K, 4]` xyxy; `kept` `int64 [K]` indices of the
    surviving input objects (re-select classes with it); `instance_masks` `uint8 [K, H, W]`
    or None; `semantic` `uint8 [H, W]` or None.
    """

    image: np.ndarray
    boxes: np.ndarray
    kept: np.ndarray
    instance_masks: np.ndarray | None = None
    semantic: np.ndarray | None = None


class BoxMaskAugmenter:
    """Applies an `AugmentConfig` to single examples; thread-safe, deterministic per seed.

    tf.data calls it from several threads: each thread builds its own Compose (seeding a
    shared one and then drawing would race between threads).
    """

    def __init__(self, config: AugmentConfig, semantic_fill: int = 0):
        self.config = config
        self.semantic_fill = semantic_fill
        self._local = threading.local()

    def _compose(self, mask_fill: int) -> A.Compose | None:
        composes = self._local.__dict__.setdefault("composes", {})
        if mask_fill not in composes:
            composes[mask_fill] = build_augmentation(self.config, mask_fill)
        return composes[mask_fill]

    def __call__(self, image: np.ndarray, boxes: np.ndarray, seed: int,
                 instance_masks: np.ndarray | None = None, semantic: np.ndarray | None = None) -> AugmentedExample:
        """Augment `image` `uint8 [H, W, 3]` with its `boxes` `[K, 4]` and optional masks.

        Pass either `instance_masks` (`uint8 [K, H, W]`, one per box) or `semantic`
        (`uint8 [H, W]`), not both. With instance masks each kept box becomes the tight
        box of its augmented mask (moving box corners over-estimates an object cut by the
        border) and objects whose mask vanished are dropped. An image that had objects
        keeps at least one: up to `ATTEMPTS_TO_KEEP_OBJECTS` draws, else it is returned as is.
        """
        if instance_masks is not None and semantic is not None:
            raise ValueError("BoxMaskAugmenter takes instance_masks or semantic, not both")
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        identity = AugmentedExample(image, boxes, np.arange(len(boxes)), instance_masks, semantic)
        compose = self._compose(self.semantic_fill if semantic is not None else 0)
        if compose is None:
            return identity
        for attempt in range(ATTEMPTS_TO_KEEP_OBJECTS):
            _seed_compose(compose, seed, attempt)
            result = _apply(compose, image, boxes, instance_masks, semantic)
            if len(result.kept) or not len(boxes):
                return result
        return identity


def _seed_compose(compose: A.Compose, seed: int, attempt: int) -> None:
    """Distinct seeds per transform: one shared seed would make every p-draw the same."""
    states = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, attempt]).generate_state(
        len(compose.transforms) + 1)
    compose.set_random_seed(int(states[0]))
    for transform, state in zip(compose.transforms, states[1:]):
        transform.set_random_seed(int(state))


def _apply(compose: A.Compose, image: np.ndarray, boxes: np.ndarray,
           instance_masks: np.ndarray | None, semantic: np.ndarray | None) -> AugmentedExample:
    inputs = {"image": image, "bboxes": boxes, OBJECT_INDEX_FIELD: np.arange(len(boxes))}
    if semantic is not None:
        inputs["mask"] = semantic
    elif instance_masks is not None and len(instance_masks):
        inputs["masks"] = instance_masks  # albumentations cannot stack an empty list of masks
    out = compose(**inputs)
    kept = np.asarray(out[OBJECT_INDEX_FIELD], np.int64).reshape(-1)
    out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    height, width = out["image"].shape[:2]
    if semantic is not None:
        return AugmentedExample(out["image"], out_boxes, kept, semantic=np.asarray(out["mask"], np.uint8))
    if instance_masks is None:
        return AugmentedExample(out["image"], out_boxes, kept)
    masks = np.asarray(out["masks"], np.uint8)[kept] if len(instance_masks) else np.zeros((0, height, width), np.uint8)
    tight, visible = tight_boxes(masks)
    return AugmentedExample(out["image"], tight[visible], kept[visible], instance_masks=masks[visible])


def tight_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[K, H, W]` masks -> (`float32 [K, 4]` xyxy pixel-edge boxes, `bool [K]` mask not empty).

    A mask covering columns c0..c1 and rows r0..r1 (inclusive) has box `(c0, r0, c1 + 1, r1 + 1)`.
    """
    masks = np.asarray(masks).astype(bool)
    boxes = np.zeros((masks.shape[0], 4), np.float32)
    visible = masks.any(axis=(1, 2))
    for k in np.flatnonzero(visible):
        rows = np.flatnonzero(masks[k].any(axis=1))
        cols = np.flatnonzero(masks[k].any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes, visible
