"""Timing helpers shared by the benchmarks: warm, interleaved, median of rounds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from optimum_dynexec.reference.budgets import active_budget, preset_name


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


def save_results(results: dict, output_dir: str | Path, name: str) -> Path:
    """Writes `results` as `<output_dir>/<name>.json` and returns the PNG path to plot into beside it.

    The JSON also records which prepared models were measured: the preset and budget they were trained with (their
    folders, which the results name, carry the same settings).
    """
    results = {**results, "prepared_with": {"preset": preset_name(), "budget": active_budget().to_dict()}}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    return output_dir / f"{name}.png"
