"""detseg.models.necks."""
