"""Models: backbones and transfer learning, box geometry, task heads and models.

Pure Keras 3 / TensorFlow / keras-cv: of detseg it imports only `detseg.core` (the contract
constants, such as the pyramid level names `FEATURE_LEVELS`, live there). Every model
takes raw pixels (float32 `[B, H, W, 3]`, 0..255) and normalizes them inside.

Every task model is a `TaskModel` (`models.task_model`: raw `call`, `compute_loss`,
`predict_step` giving decoded predictions, nested config round trip) and is exported
here, as are the backbones and transfer-learning helpers.

The names load lazily (PEP 562 `__getattr__`): `pipelines` may use `detseg.models.ops`,
and importing a submodule runs this file first, so it must not load the model families.
`from detseg.models import YoloDetector` imports that family's module, which registers its
Keras classes (layers and heads too); `detseg.models.TASK_MODELS` (or
`register_task_models()`) imports every family, after which `keras.saving.load_model` on
any run's `model.keras` needs nothing else imported.
"""

from __future__ import annotations

import importlib

# Exported name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(("BACKBONE_NAMES", "build_backbone", "feature_shape"), "detseg.models.backbones.registry"),
    **dict.fromkeys(("BackboneError", "BackboneWeightsError"), "detseg.models.backbones.weights"),
    "PixelNormalization": "detseg.models.backbones.pixel_normalization",
    **dict.fromkeys(("ALL_BLOCKS", "TransferError", "backbone_blocks", "freeze", "unfreeze_top_blocks",
                     "weights_fingerprint"), "detseg.models.backbones.transfer"),
    **dict.fromkeys(("ClassificationLocalizationError", "ClassificationLocalizationModel", "build_classifier",
                     "build_clsloc_head"), "detseg.models.clsloc.classification_localization"),
    **dict.fromkeys(("BOX_LOSSES", "NO_OBJECT"), "detseg.models.clsloc.losses"),
    "TaskModel": "detseg.models.task_model",
    "DenseDetector": "detseg.models.dense_detector",
    **dict.fromkeys(("YoloDetector", "build_yolo_detector"), "detseg.models.yolo.detector"),
    **dict.fromkeys(("SsdDetector", "build_ssd_detector"), "detseg.models.ssd.detector"),
    **dict.fromkeys(("FasterRCNN", "build_faster_rcnn"), "detseg.models.rcnn.faster_rcnn"),
    **dict.fromkeys(("MaskRCNN", "build_mask_rcnn"), "detseg.models.rcnn.mask_rcnn"),
    "SemanticSegmenter": "detseg.models.segmentation.semantic_segmenter",
    "FCN": "detseg.models.segmentation.fcn",
    "UNet": "detseg.models.segmentation.unet",
    "SegmentationLoss": "detseg.models.segmentation.losses",
}
# Every task model class, for what must cover them all (registration, config round trip,
# compile defaults): `TASK_MODELS` is the tuple of these classes.
TASK_MODEL_NAMES = ("ClassificationLocalizationModel", "YoloDetector", "SsdDetector", "FasterRCNN",
                    "MaskRCNN", "SemanticSegmenter", "FCN", "UNet")

__all__ = sorted([*_EXPORTS, "TASK_MODELS", "TASK_MODEL_NAMES", "register_task_models"])


def register_task_models() -> tuple[type, ...]:
    """Import every task model's module (registering its Keras classes); returns the classes."""
    return tuple(__getattr__(name) for name in TASK_MODEL_NAMES)


def __getattr__(name: str):
    if name == "TASK_MODELS":
        value = register_task_models()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'detseg.models' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
