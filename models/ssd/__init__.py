"""detseg.models.ssd."""
