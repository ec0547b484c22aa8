"""detseg: object detection and segmentation on Keras 3 / TensorFlow.

One installed namespace; each room is a subpackage (mapped from its top-level folder by
`setup.cfg`): `detseg.data`, `detseg.pipelines`, `detseg.models`, `detseg.training`,
`detseg.evaluation`, `detseg.serving`, `detseg.configs` (packaged YAML), `detseg.core`
(contract constants every room may import) and `detseg.cli` (the `detseg` command, which
nothing imports). Importing `detseg` itself loads nothing heavy.
"""

__version__ = "0.1.0"
