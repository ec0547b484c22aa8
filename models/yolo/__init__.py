"""detseg.models.yolo."""
