"""Timing helpers shared by the benchmarks: warm, interleaved, median of rounds."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_calls(fn: Callable, inputs: list, warmup: int = 5) -> np.ndarray:
    """Seconds per call of `fn(**x)` for each `x` in `inputs`, after `warmup` untimed calls."""
    for x in inputs[:warmup]:
        fn(**x)
    out = np.empty(len(inputs))
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        fn(**x)
        out[i] = time.perf_counter() - start
    return out
