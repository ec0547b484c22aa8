"""Synthetic single-object images for the classification + localization tests.

A uniquely named module (not a conftest), so `import clsloc_squares` from the tests in
this folder never picks up another folder's helpers.
"""

from __future__ import annotations

import numpy as np

SQUARE_COLORS = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230]], np.float32)


def make_square_images(count: int, size: int = 64, seed: int = 0):
    """`count` images of one coloured square on a dark noisy background.

    Returns `(images float32 [count, size, size, 3] in 0..255, {"class": int32 [count],
    "box": float32 [count, 4] xyxy pixels})`; the class is the colour (0 red, 1 green,
    2 blue), the box the square's extent (max edge exclusive).
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (count, size, size, 3)).astype(np.float32)
    classes = rng.integers(0, len(SQUARE_COLORS), count).astype(np.int32)
    boxes = np.zeros((count, 4), np.float32)
    for index in range(count):
        side = int(rng.integers(size // 5, size // 2))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        images[index, y0:y0 + side, x0:x0 + side] = SQUARE_COLORS[classes[index]]
        boxes[index] = (x0, y0, x0 + side, y0 + side)
    return images, {"class": classes, "box": boxes}
