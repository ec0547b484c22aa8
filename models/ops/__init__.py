"""detseg.models.ops."""
