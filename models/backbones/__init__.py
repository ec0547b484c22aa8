"""detseg.models.backbones."""
