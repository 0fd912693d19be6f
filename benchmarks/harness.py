"""Timing helper for benchmark modules: `from harness import median_us`."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_us(fn: Callable[[], object], repeat: int = 7, min_time: float = 0.05) -> float:
    """Median wall time of one call of `fn`, in microseconds.

    Calls are batched so that each of the `repeat` timed batches lasts at
    least `min_time` seconds (as timeit's autorange does); one untimed call
    first warms caches and imports.
    """
    fn()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - start >= min_time:
            break
        number *= 2
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples) * 1e6
