"""The contract constants: one definition of each name every room speaks.

Standard library only, so every room may import it (`models` included). See
`detseg.pipelines.batch_contract` for the batch these codes appear in.
"""

from __future__ import annotations

# Tasks: what a dataset's targets and a model's predictions are.
DETECTION = "detection"              # boxes + classes
INSTANCE = "instance"                # boxes + classes + one mask per box
SEMANTIC = "semantic"                # one class map per image
CLASSIFICATION_LOCALIZATION = "classification_localization"  # one class + one box per image
TASKS = (DETECTION, INSTANCE, SEMANTIC, CLASSIFICATION_LOCALIZATION)

# Label codes in batches and predictions.
PAD_CLASS = -1           # class code of a padding row in "classes"
PAD_BOX_VALUE = -1.0     # every coordinate of a padding row in "boxes"
SEMANTIC_BACKGROUND = 0  # class-map value of background; class index i is i + 1
SEMANTIC_IGNORE = 255    # class-map value the loss and metrics skip
BACKGROUND_NAME = "background"  # the name of class-map value 0 in reports and exports

# Instance masks: a resampled mask probability at or above this is the object.
MASK_THRESHOLD = 0.5

# Semantic predictions: the score outputs resampled to a class map, in order of preference
# (logits first: a float32 softmax of near-equal logits ties where the logits do not).
SEMANTIC_SCORE_OUTPUTS = ("logits", "probabilities")

# Pixels: the letterbox canvas value, mid-grey (closest to the mean pixel, least edge contrast).
PAD_PIXEL_VALUE = 114.0

# A letterbox transform travels as `float32 [5]`: (scale, pad_x, pad_y, height, width).
TRANSFORM_SIZE = 5

# Feature pyramid levels every backbone returns, and their strides.
FEATURE_LEVELS = ("P3", "P4", "P5")
FEATURE_STRIDES = {"P3": 8, "P4": 16, "P5": 32}


def check_task(task: str) -> str:
    """`task` if it is one of `TASKS`; else a ValueError listing the valid names."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return task
