"""`make demo`: every technique on the real models, each as soon as its models are ready, cheapest first.

    python -m optimum_dynexec.reference.demo [--no-prepare] [--preset full|ci]

The models are prepared by `optimum_dynexec.reference.prepare` in a background process (its log in the cache) while
the demo shows what is ready: prompt lookup needs only SmolLM2's conversion and export (about two minutes on a fresh
machine), early exit needs the fine-tuned classifier and its exit heads, the draft model and the EAGLE head need their
distillation, StepSaver needs the text-to-image pipeline and its step predictor. Each section prints its measured
speed and quality beside optimum-intel's plain class, and what preparation remains.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optimum_dynexec.utils import cache_dir, setup_logging

from .budgets import PRESET_ENV, PRESETS, preset_name
from .prepare import GROUPS, is_step_ready, recorded_timings

logger = logging.getLogger(__name__)

POLL_SECONDS = 10.0
# minutes each preparation step took on a fresh 2-core machine, used until this cache has its own timings
FIRST_GUESS_MINUTES = {
    "full": {"llm-base": 2, "early-exit": 22, "draft": 30, "eagle": 22, "diffusion": 45},
    "ci": {"llm-base": 2, "early-exit": 15, "draft": 8, "eagle": 8, "diffusion": 31},  # a fresh 2-core run
}


@dataclass
class Section:
    """One part of the demo: a title, the preparation steps it needs, and the function that shows it."""

    title: str
    needs: list[str]
    show: Callable[[Path], str]


def _prompt_lookup(out: Path) -> str:
    from .benchmark.speculative import SpeculativeBenchConfig, format_table, run_benchmark

    config = SpeculativeBenchConfig(
        num_prompts=1,
        rounds=1,
        precisions=["f32"],
        prompt_lookup_num_tokens=[5],
        draft_model=False,
        eagle=False,
        useless_draft=False,
        name="speculative_lookup",
    )
    return format_table(run_benchmark(config, out)) + (
        "\n'identical' compares the text with optimum-intel's own greedy output (exact f32); prompt lookup copies "
        "from the prompt where the text repeats it, so 'copy' gains most.\n"
    )


def _early_exit(out: Path) -> str:
    from .benchmark.early_exit import EarlyExitBenchConfig, format_table, run_benchmark

    config = EarlyExitBenchConfig(thresholds=[0.95], latency_samples=200, rounds=1)
    return format_table(run_benchmark(config, out)) + (
        "\nSpeedups are against optimum-intel's OVModelForSequenceClassification of the same folder (x b1, x b32) and "
        "against its FP32 model (/fp32); 'calibrated' is the threshold stored at export.\n"
    )


def _drafters(out: Path) -> str:
    from .benchmark.speculative import SpeculativeBenchConfig, format_table, run_benchmark

    config = SpeculativeBenchConfig(
        num_prompts=1, rounds=1, precisions=["f32"], prompt_lookup_num_tokens=[5], num_assistant_tokens=[3]
    )
    return format_table(run_benchmark(config, out)) + (
        "\nEAGLE rows use the head `make models` trained; 'useless EAGLE head' (random) is what the back-off costs "
        "when a draft never helps.\n"
    )


def _stepsaver(out: Path) -> str:
    from .benchmark.stepsaver import StepSaverBenchConfig, format_table, run_benchmark

    config = StepSaverBenchConfig(num_prompts=30, quantizations=["fp32"], real_images=500, grid_prompts=5)
    return format_table(run_benchmark(config, out)) + (
        "\nHeld-out prompts and seeds; 'judge acc' is how often a Fashion-MNIST classifier sees the prompted class, "
        "SSIM is to the plain 50-step image of the same seed.\n"
    )


SECTIONS = [
    Section("Prompt lookup: SmolLM2-135M vs optimum-intel's greedy", ["llm-base"], _prompt_lookup),
    Section("Early exit: MiniLM-L6 sentiment classifier vs optimum-intel's full model", ["early-exit"], _early_exit),
    Section(
        "Speculative decoding, draft model and EAGLE head: SmolLM2-135M vs optimum-intel's greedy",
        ["llm-base", "draft", "eagle"],
        _drafters,
    ),
    Section("StepSaver: Fashion-MNIST text-to-image vs optimum-intel's 50-step pipeline", ["diffusion"], _stepsaver),
]


def remaining_minutes(pending: list[str]) -> float:
    """An estimate of the preparation left: the diffusion models build beside the rest (`prepare --jobs 2`)."""
    guess = {**FIRST_GUESS_MINUTES[preset_name()], **{k: v / 60 for k, v in recorded_timings().items()}}
    serial = sum(guess[s] for s in pending if s != "diffusion")
    return max(serial, guess["diffusion"] if "diffusion" in pending else 0.0)


def _start_preparation() -> subprocess.Popen | None:
    if all(is_step_ready(s) for s in GROUPS["all"]):
        return None
    log = cache_dir() / "prepare.log"
    sys.stdout.write(f"Preparing the models in the background (log: {log}).\n")
    with open(log, "a") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "optimum_dynexec.reference.prepare", "all", "--jobs", "2"],
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _wait_for(needs: list[str], preparing: subprocess.Popen | None) -> None:
    while not all(is_step_ready(s) for s in needs):
        if preparing is None:
            raise SystemExit(f"Models for {needs} are not prepared; run without --no-prepare or `make models` first.")
        if preparing.poll() is not None:
            raise SystemExit(
                f"Preparing the models stopped (exit {preparing.returncode}) before {needs} were ready; see "
                f"{cache_dir() / 'prepare.log'}."
            )
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Every technique on the real models, as soon as each is ready.")
    parser.add_argument("--no-prepare", action="store_true", help="show only what is prepared already")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="training budget of the models")
    args = parser.parse_args(argv)
    if args.preset:
        os.environ[PRESET_ENV] = args.preset
    setup_logging(logging.WARNING)
    start = time.perf_counter()
    preparing = None if args.no_prepare else _start_preparation()
    out = cache_dir("demo")
    for section in SECTIONS:
        pending = [s for s in GROUPS["all"] if not is_step_ready(s)]
        if pending and not args.no_prepare:
            sys.stdout.write(
                f"\n[{(time.perf_counter() - start) / 60:.1f} min] preparation left: {', '.join(pending)} "
                f"(about {remaining_minutes(pending):.0f} min on 2 cores; timings measured beside it are noisier)\n"
            )
        if args.no_prepare and not all(is_step_ready(s) for s in section.needs):
            sys.stdout.write(f"\n== {section.title} ==\nskipped: not prepared ({', '.join(section.needs)})\n")
            continue
        sys.stdout.flush()
        _wait_for(section.needs, preparing)
        sys.stdout.write(f"\n== {section.title} ==\n")
        sys.stdout.flush()
        sys.stdout.write(section.show(out))
        sys.stdout.write(f"[{(time.perf_counter() - start) / 60:.1f} min since the demo started]\n")
        sys.stdout.flush()
    if preparing is not None:
        preparing.wait()
    sys.stdout.write(f"\nPlots and JSON: {out}. Full sweeps: make bench.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
