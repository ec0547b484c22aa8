"""Models: backbones and transfer learning, box geometry, task heads and models.

Pure Keras 3 / TensorFlow / keras-cv: of detseg it imports only `detseg.core` (the contract
constants, such as the pyramid level names `FEATURE_LEVELS`, live there). Every model
takes raw pixels (float32 `[B, H, W, 3]`, 0..255) and normalizes them inside.
"""

from detseg.models.backbones.registry import BACKBONE_NAMES, build_backbone, feature_shape
from detseg.models.backbones.weights import BackboneError, BackboneWeightsError
from detseg.models.clsloc.classification_localization import (
    ClassificationLocalizationError, ClassificationLocalizationModel, build_classifier,
    build_clsloc_head)
from detseg.models.clsloc.losses import BOX_LOSSES, NO_OBJECT
from detseg.models.backbones.pixel_normalization import PixelNormalization
from detseg.models.backbones.transfer import (
    ALL_BLOCKS, TransferError, backbone_blocks, freeze, unfreeze_top_blocks, weights_fingerprint)

__all__ = [
    "ALL_BLOCKS", "BACKBONE_NAMES", "BOX_LOSSES", "BackboneError", "BackboneWeightsError",
    "ClassificationLocalizationError", "ClassificationLocalizationModel", "NO_OBJECT",
    "PixelNormalization", "TransferError", "backbone_blocks", "build_backbone", "build_classifier",
    "build_clsloc_head", "feature_shape", "freeze", "unfreeze_top_blocks", "weights_fingerprint",
]
