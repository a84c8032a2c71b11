"""`python -m optimum_dynexec.reference.benchmark {early-exit,speculative,speculative-modes,stepsaver,serving}
[--config configs/<name>.json]
[--output benchmarks]`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimum_dynexec.reference.benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="technique", required=True)
    ee = sub.add_parser("early-exit", help="early exit vs optimum-intel's OVModelForSequenceClassification")
    ee.add_argument("--config", default="configs/early_exit.json")
    ee.add_argument("--output", default="benchmarks")
    ee.add_argument("--rounds", type=int, default=None, help="override the config's timing rounds")
    ee.add_argument("--test-samples", type=int, default=None, help="use only the first N test texts")
    sd = sub.add_parser("speculative", help="speculative decoding vs optimum-intel's OVModelForCausalLM")
    sd.add_argument("--config", default="configs/speculative.json")
    sd.add_argument("--output", default="benchmarks")
    sm = sub.add_parser("speculative-modes", help="speculative decoding by call shape: sampling, streaming")
    sm.add_argument("--config", default="configs/speculative_modes.json")
    sm.add_argument("--output", default="benchmarks")
    ss = sub.add_parser(
        "stepsaver", help="StepSaver and adaptive stopping vs optimum-intel's OVStableDiffusionPipeline"
    )
    ss.add_argument("--config", default="configs/stepsaver.json")
    ss.add_argument("--output", default="benchmarks")
    ss.add_argument("--num-prompts", type=int, default=None, help="override the config's held-out prompt count")
    sv = sub.add_parser("serving", help="the HTTP server (and Ray Serve): each technique on and off by concurrency")
    sv.add_argument("--config", default="configs/serving.json")
    sv.add_argument("--output", default="benchmarks")
    args = parser.parse_args(argv)
    from optimum_dynexec.utils import setup_logging

    setup_logging()
    if args.technique == "early-exit":
        from optimum_dynexec.reference.benchmark.early_exit import EarlyExitBenchConfig, format_table, run_benchmark

        config = EarlyExitBenchConfig.from_file(args.config)
        config.rounds = args.rounds or config.rounds
        config.test_samples = args.test_samples
        results = run_benchmark(config, args.output)
        sys.stdout.write(format_table(results) + "\n")
    elif args.technique == "speculative":
        from optimum_dynexec.reference.benchmark.speculative import SpeculativeBenchConfig, run_benchmark
        from optimum_dynexec.reference.benchmark.speculative import format_table as speculative_table

        results = run_benchmark(SpeculativeBenchConfig.from_file(args.config), args.output)
        sys.stdout.write(speculative_table(results) + "\n")
    elif args.technique == "speculative-modes":
        from optimum_dynexec.reference.benchmark.modes import ModesBenchConfig
        from optimum_dynexec.reference.benchmark.modes import format_table as modes_table
        from optimum_dynexec.reference.benchmark.modes import run_benchmark as run_modes

        sys.stdout.write(modes_table(run_modes(ModesBenchConfig.from_file(args.config), args.output)) + "\n")
    elif args.technique == "serving":
        from optimum_dynexec.reference.benchmark.serving import ServingBenchConfig
        from optimum_dynexec.reference.benchmark.serving import format_table as serving_table
        from optimum_dynexec.reference.benchmark.serving import run_benchmark as run_serving

        sys.stdout.write(serving_table(run_serving(ServingBenchConfig.from_file(args.config), args.output)) + "\n")
    elif args.technique == "stepsaver":
        from optimum_dynexec.reference.benchmark.stepsaver import StepSaverBenchConfig
        from optimum_dynexec.reference.benchmark.stepsaver import format_table as stepsaver_table
        from optimum_dynexec.reference.benchmark.stepsaver import run_benchmark as run_stepsaver

        config = StepSaverBenchConfig.from_file(args.config)
        config.num_prompts = args.num_prompts or config.num_prompts
        results = run_stepsaver(config, args.output)
        sys.stdout.write(stepsaver_table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
