"""The YAML configs that ship with detseg: `detseg train yolo_synthetic` finds `yolo_synthetic.yaml` here."""
