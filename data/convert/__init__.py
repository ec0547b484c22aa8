"""Other annotation formats <-> COCO, detseg's canonical format.

Each converter returns a COCO instances dict (write it with `data.coco.write_coco`);
`coco_to_yolo` writes YOLO label files. Category ids made by the converters are 1..C.
"""

from detseg.data.convert.masks import masks_to_coco
from detseg.data.convert.voc import voc_to_coco
from detseg.data.convert.yolo import coco_to_yolo, yolo_to_coco

__all__ = ["coco_to_yolo", "masks_to_coco", "voc_to_coco", "yolo_to_coco"]
