"""tf.data input pipelines: decode, augment (albumentations), letterbox, pad, batch.

Public entry points:
- `build_dataset(dataset, task, image_size, batch_size, augment, shuffle, seed, ...)` -> `(x, y)` batches
- `build_eval_dataset(dataset, task, image_size, batch_size, ...)` -> `(x, meta)` batches
- `AugmentConfig` - what augmentation does
- `letterbox_params`, `LetterboxTransform` - where an image sits in the model frame (the way
  back to original pixels is `detseg.models.ops.letterbox`)
- the batch contract in `pipelines.batch_contract` (its specs) and `detseg.core.contract` (task
  names, label codes; re-exported here)
"""

from detseg.core.contract import (CLASSIFICATION_LOCALIZATION, DETECTION, INSTANCE, PAD_BOX_VALUE, PAD_CLASS, SEMANTIC,
                                  SEMANTIC_BACKGROUND, SEMANTIC_IGNORE, TASKS)
from detseg.pipelines.augment import AugmentConfig
from detseg.pipelines.dataset import PAD_IMAGE_ID, build_dataset, build_eval_dataset
from detseg.pipelines.letterbox import LetterboxTransform, letterbox_params

__all__ = [
    "AugmentConfig", "build_dataset", "build_eval_dataset", "PAD_IMAGE_ID",
    "LetterboxTransform", "letterbox_params",
    "TASKS", "DETECTION", "INSTANCE", "SEMANTIC", "CLASSIFICATION_LOCALIZATION",
    "PAD_CLASS", "PAD_BOX_VALUE", "SEMANTIC_BACKGROUND", "SEMANTIC_IGNORE",
]
