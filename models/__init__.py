"""Models: backbones and transfer learning, box geometry, task heads and models.

Pure Keras 3 / TensorFlow / keras-cv: of detseg it imports only `detseg.core` (the contract
constants, such as the pyramid level names `FEATURE_LEVELS`, live there). Every model
takes raw pixels (float32 `[B, H, W, 3]`, 0..255) and normalizes them inside.

Every task model is a `TaskModel` (`models.task_model`: raw `call`, `compute_loss`,
`predict_step` giving decoded predictions, nested config round trip) and is exported
here. Importing `detseg.models` registers every Keras class the task models are saved
with (their layers, heads and losses too), so `keras.saving.load_model` on a run's
`model.keras` needs nothing else imported.
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
from detseg.models.task_model import TaskModel
from detseg.models.dense_detector import DenseDetector
from detseg.models.yolo.detector import YoloDetector, build_yolo_detector
from detseg.models.ssd.detector import SsdDetector, build_ssd_detector
from detseg.models.rcnn.faster_rcnn import FasterRCNN, build_faster_rcnn
from detseg.models.rcnn.mask_rcnn import MaskRCNN, build_mask_rcnn
from detseg.models.segmentation.semantic_segmenter import SemanticSegmenter
from detseg.models.segmentation.fcn import FCN
from detseg.models.segmentation.unet import UNet
from detseg.models.segmentation.losses import SegmentationLoss

# Every task model class, for checks that must cover them all (config round trip, compile defaults).
TASK_MODELS = (ClassificationLocalizationModel, YoloDetector, SsdDetector, FasterRCNN, MaskRCNN,
               SemanticSegmenter, FCN, UNet)

__all__ = [
    "ALL_BLOCKS", "BACKBONE_NAMES", "BOX_LOSSES", "BackboneError", "BackboneWeightsError",
    "ClassificationLocalizationError", "ClassificationLocalizationModel", "DenseDetector", "FCN",
    "FasterRCNN", "MaskRCNN", "NO_OBJECT", "PixelNormalization", "SegmentationLoss",
    "SemanticSegmenter", "SsdDetector", "TASK_MODELS", "TaskModel", "TransferError", "UNet",
    "YoloDetector", "backbone_blocks", "build_backbone", "build_classifier", "build_clsloc_head",
    "build_faster_rcnn", "build_mask_rcnn", "build_ssd_detector", "build_yolo_detector",
    "feature_shape", "freeze", "unfreeze_top_blocks", "weights_fingerprint",
]
