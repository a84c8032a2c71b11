"""`make demo`: every available technique on the real prepared models, speed and quality side by side.

python -m optimum_dynexec.reference.demo
"""

from __future__ import annotations

import logging
import sys

from optimum_dynexec.utils import cache_dir


def main() -> int:
    from optimum_dynexec.utils import setup_logging

    setup_logging(logging.WARNING)
    from optimum_dynexec.reference.benchmark.early_exit import EarlyExitBenchConfig, format_table, run_benchmark

    sys.stdout.write("== Early exit: MiniLM-L6 sentiment classifier vs optimum-intel's full model ==\n")
    config = EarlyExitBenchConfig(thresholds=[0.95], latency_samples=200, rounds=1)
    results = run_benchmark(config, cache_dir("demo"))
    sys.stdout.write(format_table(results) + "\n")
    sys.stdout.write(
        "Speedups are against optimum-intel's OVModelForSequenceClassification of the same folder (x b1, x b32) and "
        "against its FP32 model (/fp32); 'calibrated' is the threshold stored at export.\n"
        f"Plot and JSON: {cache_dir('demo')}. Full sweep: make bench.\n"
    )
    from optimum_dynexec.reference.benchmark.speculative import SpeculativeBenchConfig
    from optimum_dynexec.reference.benchmark.speculative import format_table as speculative_table
    from optimum_dynexec.reference.benchmark.speculative import run_benchmark as run_speculative

    sys.stdout.write("\n== Speculative decoding: SmolLM2-135M on Austen passages vs optimum-intel's greedy ==\n")
    config = SpeculativeBenchConfig(
        num_prompts=1, rounds=1, precisions=["f32"], prompt_lookup_num_tokens=[5], num_assistant_tokens=[3]
    )
    sys.stdout.write(speculative_table(run_speculative(config, cache_dir("demo"))) + "\n")
    sys.stdout.write(
        "'identical' compares the text with optimum-intel's own greedy output (exact f32). EAGLE rows use the head "
        "`make models` trained; 'useless EAGLE head' (random) is what the back-off costs when a draft never helps.\n"
    )
    from optimum_dynexec.reference.benchmark.stepsaver import StepSaverBenchConfig
    from optimum_dynexec.reference.benchmark.stepsaver import format_table as stepsaver_table
    from optimum_dynexec.reference.benchmark.stepsaver import run_benchmark as run_stepsaver

    sys.stdout.write("\n== StepSaver: Fashion-MNIST text-to-image vs optimum-intel's 50-step pipeline ==\n")
    config = StepSaverBenchConfig(num_prompts=30, quantizations=["fp32"], real_images=500, grid_prompts=5)
    sys.stdout.write(stepsaver_table(run_stepsaver(config, cache_dir("demo"))) + "\n")
    sys.stdout.write(
        "Held-out prompts and seeds; 'judge acc' is how often a Fashion-MNIST classifier sees the prompted class, "
        "SSIM is to the plain 50-step image of the same seed. Full run with INT8: make bench.\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
