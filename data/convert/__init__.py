"""Other annotation formats <-> COCO, detseg's canonical format.

Each converter returns a COCO instances dict (write it with `data.coco.write_coco`);
`coco_to_yolo` writes YOLO label files. Category ids made by the converters are 1..C.

No converter changes the data silently: a box to clip, an invalid box to drop or an
unlabelled image to add raises `data.repairs.RepairsNeeded` (before anything is written)
unless the caller's `data.repairs.Repairs` allows it; what was changed is noted there.
"""

from detseg.data.convert.masks import masks_to_coco
from detseg.data.convert.voc import voc_to_coco
from detseg.data.convert.yolo import coco_to_yolo, yolo_to_coco

__all__ = ["coco_to_yolo", "masks_to_coco", "voc_to_coco", "yolo_to_coco"]
