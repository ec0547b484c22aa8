"""Model families the trainer knows: `FAMILIES[name]` is everything it needs from one.

To add a family (YOLO, SSD, FCN, U-Net, Faster/Mask R-CNN), write its
`training.model_family.ModelFamily` in a file of its own (as `training/clsloc_family.py`
does) and add one line here. The config's `model.family` picks the entry and `model.head`
is checked against its `head_config` dataclass. This dict is the only place family names
are looked up.
"""

from __future__ import annotations

from detseg.training.clsloc_family import CLSLOC_FAMILY
from detseg.training.model_family import ModelFamily
from detseg.training.one_stage_families import SSD_FAMILY, YOLO_FAMILY
from detseg.training.segmentation_family import FCN_FAMILY, UNET_FAMILY
from detseg.training.two_stage_families import FASTER_RCNN_FAMILY, MASK_RCNN_FAMILY

FAMILIES: dict[str, ModelFamily] = {
    "clsloc": CLSLOC_FAMILY,
    "fcn": FCN_FAMILY,
    "unet": UNET_FAMILY,
    "yolo": YOLO_FAMILY,
    "ssd": SSD_FAMILY,
    "faster_rcnn": FASTER_RCNN_FAMILY,
    "mask_rcnn": MASK_RCNN_FAMILY,
}
