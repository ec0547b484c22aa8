"""detseg.models.clsloc."""
