"""StepSaver benchmark on the Fashion-MNIST text-to-image pipeline, with held-out prompts and seeds.

Same process, same precision: optimum-intel's plain `OVStableDiffusionPipeline` at its default fixed steps against
this package's class with the StepSaver predictor and with the adaptive stop (and, as a control, the plain pipeline
at the predictor's mean step count). Per image: steps, wall time, whether the judge sees the prompted class, SSIM to
the plain pipeline's image of the same seed; per method: the Frechet distance of the judge's features to real test
images. Writes JSON, a steps-vs-quality plot and an image grid, prints a table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from optimum_dynexec.reference.benchmark.timing import save_results

logger = logging.getLogger(__name__)

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class StepSaverBenchConfig:
    """What `configs/stepsaver.json` holds under `bench`."""

    num_prompts: int = 100
    seed: int = 0
    quantizations: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    methods: list[str] = field(default_factory=lambda: ["predictor", "adaptive", "fixed-mean"])
    real_images: int = 1000
    grid_prompts: int = 10

    def __post_init__(self):
        if self.num_prompts <= 0 or self.real_images <= 1:
            raise ValueError("num_prompts must be positive and real_images above 1.")
        unknown = set(self.quantizations) - {"fp32", "int8"} | set(self.methods) - {
            "predictor",
            "adaptive",
            "fixed-mean",
        }
        if unknown:
            raise ValueError(f"Unknown quantizations or methods {sorted(unknown)}.")

    @classmethod
    def from_file(cls, path: str | Path) -> StepSaverBenchConfig:
        return cls(**json.loads(Path(path).read_text()).get("bench", {}))


def _generate(methods: dict, prompts: list[str], seeds: list[int], desc: str) -> dict:
    """One image per prompt (batch 1, as a service would run them) for each method `key: (pipe, kwargs)`, the
    methods interleaved prompt by prompt; returns images, steps and seconds per method."""
    runs = {name: {"images": [], "steps": [], "seconds": []} for name in methods}
    for prompt, seed in tqdm(list(zip(prompts, seeds)), desc=desc, leave=False):
        for name, (pipe, kwargs) in methods.items():
            start = time.perf_counter()
            out = pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs)
            runs[name]["seconds"].append(time.perf_counter() - start)
            runs[name]["images"].append(out.images[0])
            steps = getattr(out, "num_inference_steps", None) or [kwargs["num_inference_steps"]]
            runs[name]["steps"].append(steps[0])
    return {name: {key: np.stack(value) for key, value in run.items()} for name, run in runs.items()}


def _quality(run: dict, labels: np.ndarray, reference: np.ndarray, judge, real_features: np.ndarray) -> dict:
    from optimum_dynexec.image_metrics import frechet_distance, ssim

    predicted = judge.predict(run["images"])
    return {
        "mean_steps": float(run["steps"].mean()),
        "seconds_per_image": float(run["seconds"].mean()),
        "judge_accuracy": float((predicted == labels).mean()),
        "ssim_to_reference": ssim(run["images"], reference),
        "fid_judge": float(frechet_distance(judge.features(run["images"]), real_features)),
    }


def run_benchmark(config: StepSaverBenchConfig, output_dir: str | Path = "benchmarks") -> dict:
    from optimum.intel import OVStableDiffusionPipeline as PlainPipeline

    from optimum_dynexec.modeling_diffusion import OVStableDiffusionPipeline
    from optimum_dynexec.reference.diffusion import fashion_judge, stepsaver_export_dir
    from optimum_dynexec.reference.fashion_mnist import held_out_prompts, load_fashion_mnist

    prompts, labels = held_out_prompts(config.num_prompts, seed=config.seed + 7)
    seeds = [config.seed * 100_000 + i for i in range(len(prompts))]
    judge = fashion_judge()
    real, _ = load_fashion_mnist("test")
    real_features = judge.features(real[: config.real_images])
    methods = {}
    for quantization in config.quantizations:
        folder = stepsaver_export_dir(quantization)
        plain = PlainPipeline.from_pretrained(folder, ov_config=F32)
        ours = OVStableDiffusionPipeline.from_pretrained(folder, ov_config=F32)
        for pipe in (plain, ours):
            pipe.set_progress_bar_config(disable=True)
            pipe("warm up", num_inference_steps=2)
        methods[(quantization, "plain")] = (plain, {"num_inference_steps": ours.step_config.default_steps})
        if "predictor" in config.methods:
            methods[(quantization, "predictor")] = (ours, {})
        if "adaptive" in config.methods:
            methods[(quantization, "adaptive")] = (ours, {"step_policy": "adaptive"})
        if "fixed-mean" in config.methods:
            # the control: the plain pipeline at the predictor's mean step count on these prompts
            mean_steps = int(round(np.mean(ours.predict_steps(prompts))))
            methods[(quantization, f"fixed-{mean_steps}")] = (plain, {"num_inference_steps": mean_steps})
    # every method of every precision interleaved prompt by prompt, so machine noise hits them alike
    runs = _generate(methods, prompts, seeds, "stepsaver benchmark")
    first = config.quantizations[0]
    reference, reference_seconds = runs[(first, "plain")]["images"], runs[(first, "plain")]["seconds"].mean()
    rows, grids = [], {}
    for (quantization, method), run in runs.items():
        base = runs[(quantization, "plain")]
        rows.append(
            {
                "quantization": quantization,
                "method": method,
                **_quality(run, labels, reference, judge, real_features),
                "step_reduction": float(base["steps"].mean() / run["steps"].mean()),
                "speedup": float(base["seconds"].mean() / run["seconds"].mean()),
                "speedup_vs_first_plain": float(reference_seconds / run["seconds"].mean()),
                "steps_histogram": {int(k): int(v) for k, v in zip(*np.unique(run["steps"], return_counts=True))},
            }
        )
        grids[(quantization, method)] = run["images"][: config.grid_prompts]
    results = {
        "benchmark": "stepsaver",
        "model": "fashion-sd (Stable-Diffusion-shaped, trained on Fashion-MNIST)",
        "folders": {q: str(stepsaver_export_dir(q)) for q in config.quantizations},
        "scheduler": "DDIM",
        "precision_hint": "f32",
        "held_out_prompts": len(prompts),
        "reference": f"plain {config.quantizations[0]} pipeline at its default steps, same seed (SSIM and "
        "speedup_vs_first_plain)",
        "judge_test_accuracy": judge.metrics.get("test_accuracy"),
        "config": config.__dict__,
        "rows": rows,
    }
    png = save_results(results, output_dir, "stepsaver")
    _plot(results, png)
    _grid(grids, prompts[: config.grid_prompts], Path(output_dir) / "stepsaver_grid.png")
    return results


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    markers = {"fp32": "o", "int8": "s"}
    for row in results["rows"]:
        label = f"{row['method']} ({row['quantization']})"
        kwargs = {"marker": markers[row["quantization"]], "s": 70, "label": label}
        axes[0].scatter(row["mean_steps"], row["judge_accuracy"], **kwargs)
        axes[1].scatter(row["mean_steps"], row["ssim_to_reference"], **kwargs)
        axes[2].scatter(row["seconds_per_image"] * 1000, row["judge_accuracy"], **kwargs)
    axes[0].set(
        xlabel="mean denoising steps", ylabel="judge accuracy (prompted class)", title="steps vs class fidelity"
    )
    axes[1].set(xlabel="mean denoising steps", ylabel="SSIM to the 50-step fp32 image", title="steps vs SSIM")
    axes[2].set(xlabel="ms per image (batch 1)", ylabel="judge accuracy", title="time vs class fidelity")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="lower right")
    fig.suptitle("StepSaver on the Fashion-MNIST text-to-image pipeline (held-out prompts and seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(grids: dict, prompts: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(grids)
    fig, axes = plt.subplots(len(prompts), len(keys), figsize=(1.6 * len(keys), 1.5 * len(prompts)), squeeze=False)
    for col, key in enumerate(keys):
        for row, prompt in enumerate(prompts):
            ax = axes[row][col]
            ax.imshow(grids[key][row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{key[1]}\n{key[0]}", fontsize=8)
            if col == 0:
                ax.set_ylabel(prompt, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(results: dict) -> str:
    head = (
        f"{'quant':<6} {'method':<10} {'steps':>6} {'fewer':>6} {'ms/img':>7} {'speedup':>8} "
        f"{'judge acc':>9} {'SSIM':>6} {'FID(judge)':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(
            f"{r['quantization']:<6} {r['method']:<10} {r['mean_steps']:6.1f} {r['step_reduction']:5.2f}x "
            f"{r['seconds_per_image'] * 1000:7.1f} {r['speedup']:7.2f}x {r['judge_accuracy']:9.3f} "
            f"{r['ssim_to_reference']:6.3f} {r['fid_judge']:10.2f}"
        )
    return "\n".join(lines)
