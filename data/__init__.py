"""Datasets on disk: COCO records, validation, converters, splits, statistics, synthetic data.

Imports nothing else of detseg, and no model code.
"""

from detseg.data.coco import (Annotation, Category, CocoDataset, ImageRecord, LabelMap, decode_segmentation,
                              encode_mask, load_coco, write_coco)
from detseg.data.errors import DatasetError

__all__ = ["Annotation", "Category", "CocoDataset", "DatasetError", "ImageRecord", "LabelMap",
           "decode_segmentation", "encode_mask", "load_coco", "write_coco"]
