"""Timing two (or more) sides of a comparison in turns, so both see the same machine load."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms_per_image(sides: dict[str, Callable[[], object]], images_per_call: int, calls: int,
                        rounds: int) -> dict[str, float]:
    """Median milliseconds per image of each side's `calls` calls, over `rounds` turns.

    Each side is a zero-argument callable that runs one call to completion (fetch its
    results: TensorFlow runs asynchronously) on `images_per_call` images. The sides take
    turns `rounds` times; each turn times `calls` calls of one side.
    """
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side, call in sides.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            seconds[side].append((time.perf_counter() - start) / (calls * images_per_call))
    return {side: 1000 * statistics.median(values) for side, values in seconds.items()}
