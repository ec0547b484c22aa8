"""The `data` section of a config -> the train and val COCO datasets and their label map.

`data.semantic_masks` names a folder of semantic mask PNGs (`<folder>/<image stem>.png`)
used as both splits' semantic truth, as `detseg evaluate --semantic-masks` uses it;
without it, semantic targets come from the annotations (`pipelines.records`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detseg.data.coco import CocoDataset, LabelMap, load_coco
from detseg.data.errors import DatasetError
from detseg.data.synthetic import MAX_SHAPES, MIN_SHAPE_SIZE, ensure_synthetic
from detseg.pipelines.records import with_semantic_masks


@dataclass(frozen=True)
class TrainingData:
    """Train and val splits; both share `label_map` (class index <-> COCO id)."""

    train: CocoDataset
    val: CocoDataset
    label_map: LabelMap


def synthetic_dir(config) -> Path:
    """Where `data.synthetic` lives: its `dir`, or a folder named after its parameters."""
    synthetic = config.data.synthetic
    if synthetic.dir:
        return Path(synthetic.dir)
    name = f"n{synthetic.num_images}_s{synthetic.image_size}_seed{synthetic.seed}"
    if synthetic.max_shapes != MAX_SHAPES:
        name += f"_max{synthetic.max_shapes}"
    if synthetic.min_shape_size != MIN_SHAPE_SIZE:
        name += f"_min{synthetic.min_shape_size:g}"
    return Path(config.runs_dir) / "synthetic" / name


def resolve_training_data(config) -> TrainingData:
    """Load (or first generate, for `data.synthetic`) the datasets a `TrainConfig` names."""
    data = config.data
    if data.synthetic is not None:
        paths = ensure_synthetic(synthetic_dir(config), num_images=data.synthetic.num_images,
                                 image_size=data.synthetic.image_size, seed=data.synthetic.seed,
                                 max_shapes=data.synthetic.max_shapes,
                                 min_shape_size=data.synthetic.min_shape_size)
        train, val = load_coco(paths["train"]), load_coco(paths["val"])
    else:
        train = load_coco(data.train, data.images)
        val = load_coco(data.val, data.images)
    train = with_semantic_masks(train, data.semantic_masks, "data.semantic_masks")
    val = with_semantic_masks(val, data.semantic_masks, "data.semantic_masks")
    for split, dataset in (("train", train), ("val", val)):
        if not dataset.images:
            raise DatasetError(f"{dataset.source}: the {split} split has no images")
    if train.label_map != val.label_map:
        raise DatasetError(f"{train.source} and {val.source} have different categories "
                           f"({list(train.label_map.names)} vs {list(val.label_map.names)}); "
                           f"train and val must share one label map")
    return TrainingData(train, val, train.label_map)
