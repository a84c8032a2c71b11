"""`make demo`: every available technique on the real prepared models, speed and quality side by side.

python -m optimum_dynexec.demo
"""

from __future__ import annotations

import logging
import sys

from .utils import cache_dir


def main() -> int:
    from .utils import setup_logging

    setup_logging(logging.WARNING)
    from .benchmark.early_exit import EarlyExitBenchConfig, format_table, run_benchmark

    sys.stdout.write("== Early exit: MiniLM-L6 sentiment classifier vs optimum-intel's full model ==\n")
    config = EarlyExitBenchConfig(thresholds=[0.95], latency_samples=200, rounds=1)
    results = run_benchmark(config, cache_dir("demo"))
    sys.stdout.write(format_table(results) + "\n")
    sys.stdout.write(
        "Speedups are against optimum-intel's OVModelForSequenceClassification of the same folder (x b1, x b32) and "
        "against its FP32 model (/fp32); 'calibrated' is the threshold stored at export.\n"
        f"Plot and JSON: {cache_dir('demo')}. Full sweep: make bench.\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
