"""detseg.models.rcnn."""
