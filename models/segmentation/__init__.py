"""detseg.models.segmentation."""
