"""Offline, cached preparation of the real text-to-image model and its StepSaver predictor (`make models`).

    python -m optimum_dynexec.reference.prepare diffusion

writes to the cache (see `optimum_dynexec.utils.cache_dir`):

- `models/fashion-judge-<settings>/`: the Fashion-MNIST classifier that judges generated images;
- `models/fashion-sd-<settings>/`: the Stable-Diffusion-shaped pipeline trained on Fashion-MNIST (diffusers folder);
- `models/fashion-step-predictor-<settings>/`: step records of training prompts (the fewest DDIM steps whose image
  keeps the reference's class and SSIM) and the MiniLM predictor trained on them;
- `exports/fashion-sd-stepsaver-{fp32,int8}-<settings>/`: the OpenVINO pipelines with the predictor attached.

Every step is skipped when its output exists.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optimum_dynexec.configuration import load_dynexec_config
from optimum_dynexec.exporters.diffusion import diffusion_quantization_config, export_stepsaver, load_plain_pipeline
from optimum_dynexec.exporters.quantization import quantization_config_from_flags
from optimum_dynexec.reference.fashion_mnist import CLASS_NAMES, prompts_for_labels
from optimum_dynexec.reference.judge import load_judge, prepare_judge
from optimum_dynexec.reference.sources import minilm_dir
from optimum_dynexec.reference.text_to_image import prepare_text_to_image
from optimum_dynexec.training.classifier import FineTuneConfig
from optimum_dynexec.training.step_predictor import RECORDS_NAME, StepRecords, build_step_records, train_step_predictor
from optimum_dynexec.utils import building, cache_dir

from .budgets import active_budget

logger = logging.getLogger(__name__)

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class StepPredictorSettings:
    """How the real pipeline's step predictor is trained.

    Args:
        num_prompts (`int`, defaults to 300): training prompts (training templates, classes balanced).
        seeds_per_prompt (`int`, defaults to 2): images labelled per prompt.
        step_grid (`list[int]`): DDIM step counts tried; the last (50, the pipeline default) is the reference.
        ssim_threshold (`float`, defaults to 0.9): SSIM to the reference that counts as the same image (with the
            judge's class unchanged).
        epochs (`float`, defaults to 10): predictor fine-tuning epochs.
        learning_rate (`float`, defaults to 3e-4): its peak learning rate.
        seed (`int`, defaults to 0): seeds prompts, images and training.
    """

    num_prompts: int = 300
    seeds_per_prompt: int = 2
    step_grid: list[int] = field(default_factory=lambda: [4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50])
    ssim_threshold: float = 0.9
    epochs: float = 10.0
    learning_rate: float = 3e-4
    seed: int = 0

    @property
    def records_name(self) -> str:
        """Names the measurements, which do not depend on the tolerance (labels are recomputed from them)."""
        return (
            f"n{self.num_prompts}x{self.seeds_per_prompt}-g{len(self.step_grid)}-max{self.step_grid[-1]}-s{self.seed}"
        )

    @property
    def short_name(self) -> str:
        return f"{self.records_name}-ssim{self.ssim_threshold:g}-e{self.epochs:g}-lr{self.learning_rate:g}"


def default_settings() -> StepPredictorSettings:
    """The step predictor settings of the active budget (`budgets.active_budget`)."""
    budget = active_budget()
    return StepPredictorSettings(num_prompts=budget.step_prompts, seeds_per_prompt=budget.step_seeds)


def fashion_pipeline_dir() -> Path:
    """The trained Fashion-MNIST diffusers pipeline (trained once, with its judge)."""

    return prepare_text_to_image(judge=prepare_judge())


def fashion_judge():
    """The trained Fashion-MNIST judge (`Judge` with `predict` and `features`)."""

    return load_judge(prepare_judge())


def step_predictor_dir(settings: StepPredictorSettings | None = None) -> Path:
    """Trains (once) the MiniLM step predictor of the Fashion-MNIST pipeline and returns its folder.

    The folder holds `step_records.json` (measurements of every training image at every grid step), the trained
    predictor (a transformers classifier with `step_buckets` in its config) and `step_predictor_metrics.json`.
    """
    import numpy as np

    settings = settings or default_settings()
    out = cache_dir("models") / f"fashion-step-predictor-{settings.short_name}"
    if (out / "step_predictor_metrics.json").exists():
        return out
    records_path = cache_dir("models") / f"fashion-step-records-{settings.records_name}.json"
    if records_path.exists():
        records = StepRecords.load(records_path)
    else:
        labels = np.arange(settings.num_prompts) % len(CLASS_NAMES)
        prompts = prompts_for_labels(labels, seed=settings.seed)
        pipe = load_plain_pipeline(fashion_pipeline_dir(), ov_config=F32)
        pipe.set_progress_bar_config(disable=True)
        judge = fashion_judge()
        all_prompts = [p for p in prompts for _ in range(settings.seeds_per_prompt)]
        seeds = [1_000_000 + i for i in range(len(all_prompts))]  # disjoint from the benchmark's seeds
        records = build_step_records(
            pipe, all_prompts, seeds, settings.step_grid, settings.ssim_threshold, judge=judge.predict
        )
        records.save(records_path)
    records = records.relabel(settings.ssim_threshold)
    n_val = len(records.prompts) // 10
    train, validation = _split(records, n_val)
    config = FineTuneConfig(
        epochs=settings.epochs, learning_rate=1e-4, batch_size=32, max_length=32, seed=settings.seed
    )
    with building(out) as tmp:
        train_step_predictor(train, minilm_dir(), tmp, config, validation=validation)
        records.save(tmp / RECORDS_NAME)
        (tmp / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")
    return out


def _split(records, n_val: int):

    data = asdict(records)
    per_image = ("prompts", "seeds", "ssim", "same_class", "fewest_steps")

    def part(sl: slice) -> StepRecords:
        return StepRecords(**{k: (v[sl] if k in per_image and v is not None else v) for k, v in data.items()})

    return part(slice(n_val, None)), part(slice(0, n_val))


def stepsaver_export_path(quantization: str = "fp32", settings: StepPredictorSettings | None = None) -> Path:
    """Where `stepsaver_export_dir` puts the export for these settings (it may not exist yet)."""
    settings = settings or default_settings()
    return cache_dir("exports") / f"fashion-sd-stepsaver-{quantization}-{settings.short_name}"


def stepsaver_ready(settings: StepPredictorSettings | None = None) -> bool:
    """Whether both StepSaver exports of these settings (default: the active budget's) are cached."""
    return all((stepsaver_export_path(q, settings) / "dynexec_config.json").exists() for q in ("fp32", "int8"))


def stepsaver_export_dir(quantization: str = "fp32", settings: StepPredictorSettings | None = None) -> Path:
    """The OpenVINO Fashion-MNIST pipeline with its step predictor attached (`fp32`, or `int8` weights in the
    UNet, text encoder, VAE and predictor)."""

    if quantization not in ("fp32", "int8"):
        raise ValueError(f"Unknown quantization {quantization!r}; choose fp32 or int8.")

    settings = settings or default_settings()
    out = stepsaver_export_path(quantization, settings)
    predictor = step_predictor_dir(settings)
    if (out / "dynexec_config.json").exists() and load_dynexec_config(out).training.get("predictor") == str(predictor):
        return out
    weight_format = None if quantization == "fp32" else quantization
    with building(out) as tmp:
        export_stepsaver(
            fashion_pipeline_dir(),
            tmp,
            predictor=predictor,
            default_steps=settings.step_grid[-1],
            quantization_config=diffusion_quantization_config(weight_format=weight_format),
            predictor_quantization_config=quantization_config_from_flags(weight_format=weight_format),
            training={**asdict(settings), "predictor": str(predictor)},
        )
    return out


def prepare_diffusion(settings: StepPredictorSettings | None = None) -> None:
    """Everything the StepSaver benchmark, notebook and tests use (default: the active budget's settings)."""
    settings = settings or default_settings()
    for quantization in ("fp32", "int8"):
        logger.info("StepSaver export (%s): %s", quantization, stepsaver_export_dir(quantization, settings))
    metrics = json.loads((step_predictor_dir(settings) / "step_predictor_metrics.json").read_text())
    logger.info("step predictor: %s", metrics)
