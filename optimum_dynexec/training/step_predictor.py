"""StepSaver's training: label each (prompt, seed) with its fewest sufficient denoising steps, then fine-tune a small
text classifier (MiniLM) to predict the step bucket from the prompt alone."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import TextDataset
from ..image_metrics import ssim
from ..policies.denoising import fewest_sufficient_steps
from .classifier import FineTuneConfig, fine_tune_classifier, predict_classifier

logger = logging.getLogger(__name__)

DEFAULT_STEP_GRID = (4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
RECORDS_NAME = "step_records.json"


@dataclass
class StepRecords:
    """For each (prompt, seed): the SSIM to the reference of every step count tried, and the fewest sufficient one.

    Attributes:
        prompts (`list[str]`), seeds (`list[int]`): one entry per image.
        step_grid (`list[int]`): the step counts tried, increasing; the last is the reference.
        ssim (`list[list[float]]`): SSIM of each count's image to the reference image of the same seed.
        same_class (`list[list[bool]]`, *optional*): whether the judge saw the reference's class at each count.
        fewest_steps (`list[int]`): the label: the fewest count from which every larger count is within tolerance.
        ssim_threshold (`float`): the tolerance used.
    """

    prompts: list[str]
    seeds: list[int]
    step_grid: list[int]
    ssim: list[list[float]]
    same_class: list[list[bool]] | None
    fewest_steps: list[int]
    ssim_threshold: float

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> StepRecords:
        return cls(**json.loads(Path(path).read_text()))

    def relabel(self, ssim_threshold: float) -> StepRecords:
        """The same measurements labelled with another SSIM tolerance (no image is generated again)."""
        return StepRecords(
            **{**asdict(self), "ssim_threshold": ssim_threshold, "fewest_steps": self._labels(ssim_threshold)}
        )

    def _labels(self, ssim_threshold: float) -> list[int]:
        ok = np.asarray(self.ssim) >= ssim_threshold
        if self.same_class is not None:
            ok &= np.asarray(self.same_class, dtype=bool)
        return [fewest_sufficient_steps(self.step_grid, row.tolist()) for row in ok]


def build_step_records(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    step_grid: Sequence[int] = DEFAULT_STEP_GRID,
    ssim_threshold: float = 0.9,
    judge: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 16,
    **call_kwargs,
) -> StepRecords:
    """Generates every prompt at every step count (same seed) and labels its fewest sufficient steps.

    Args:
        pipe: a diffusion pipeline (e.g. optimum-intel's `OVStableDiffusionPipeline`), called with `output_type="np"`.
        prompts (`Sequence[str]`), seeds (`Sequence[int]`): one image per pair (same lengths).
        step_grid (`Sequence[int]`): increasing step counts; the last is the quality reference.
        ssim_threshold (`float`, defaults to 0.9): an image is acceptable when its SSIM to the reference reaches it.
        judge (`Callable`, *optional*): maps images `(N, H, W, C)` in `[0, 1]` to class ids; when given, an
            acceptable image must also keep the reference's class.
        batch_size (`int`, defaults to 16): images per pipeline call.
        **call_kwargs: more pipeline arguments (e.g. `guidance_scale`).

    Raises:
        `ValueError`: on empty or mismatched prompts and seeds, or a step grid that does not increase.
    """
    prompts, seeds, step_grid = list(prompts), [int(s) for s in seeds], [int(s) for s in step_grid]
    if not prompts or len(prompts) != len(seeds):
        raise ValueError(f"Give one seed per prompt (got {len(prompts)} prompts and {len(seeds)} seeds).")
    if len(step_grid) < 2 or any(b <= a for a, b in zip(step_grid, step_grid[1:])):
        raise ValueError(f"step_grid must hold at least two increasing counts, got {step_grid}.")
    scores = np.zeros((len(prompts), len(step_grid)))
    same = np.ones((len(prompts), len(step_grid)), dtype=bool)
    starts = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(starts) * len(step_grid), desc="step records", unit="run")
    for start in starts:
        batch = slice(start, start + batch_size)
        images = {}
        for steps in reversed(step_grid):
            generators = [torch.Generator().manual_seed(seed) for seed in seeds[batch]]
            out = pipe(
                prompts[batch], num_inference_steps=steps, generator=generators, output_type="np", **call_kwargs
            )
            images[steps] = np.asarray(out.images)
            bar.update()
        reference = images[step_grid[-1]]
        ref_class = judge(reference) if judge is not None else None
        for j, steps in enumerate(step_grid):
            scores[batch, j] = [ssim(a[None], b[None]) for a, b in zip(images[steps], reference)]
            if judge is not None:
                same[batch, j] = judge(images[steps]) == ref_class
    bar.close()
    records = StepRecords(
        prompts=prompts,
        seeds=seeds,
        step_grid=step_grid,
        ssim=scores.round(5).tolist(),
        same_class=same.tolist() if judge is not None else None,
        fewest_steps=[],
        ssim_threshold=ssim_threshold,
    )
    records.fewest_steps = records._labels(ssim_threshold)
    logger.info(
        "step records: %d images, mean fewest steps %.1f of %d",
        len(prompts),
        np.mean(records.fewest_steps),
        step_grid[-1],
    )
    return records


def train_step_predictor(
    records: StepRecords,
    base_model: str | Path,
    out: str | Path,
    config: FineTuneConfig | None = None,
    validation: StepRecords | None = None,
) -> Path:
    """Fine-tunes a text classifier (one class per step count of the grid) on the records and saves it.

    Args:
        records (`StepRecords`): training prompts and their fewest sufficient steps.
        base_model (`str` or `Path`): a transformers encoder folder (e.g. all-MiniLM-L6-v2) with its tokenizer.
        out (`str` or `Path`): where the predictor (transformers folder, `step_buckets` in its config) is written.
        config (`FineTuneConfig`, *optional*): fine-tuning settings (10 epochs, lr 3e-4 by default).
        validation (`StepRecords`, *optional*): held-out records whose accuracy and mean step error are reported in
            `step_predictor_metrics.json`.

    Returns:
        `Path`: the predictor folder.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = config or FineTuneConfig(epochs=10.0, learning_rate=3e-4, batch_size=32, max_length=32)
    out = Path(out)
    buckets = list(records.step_grid)
    labels = [buckets.index(s) for s in records.fewest_steps]
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=len(buckets),
        id2label={i: str(s) for i, s in enumerate(buckets)},
        label2id={str(s): i for i, s in enumerate(buckets)},
        ignore_mismatched_sizes=True,  # a base that is a classifier already gets a new head
    )
    model.config.step_buckets = buckets
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    fine_tune_classifier(model, tokenizer, TextDataset(list(records.prompts), labels), config, out / "checkpoints")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    metrics = {
        "train_images": len(labels),
        "step_buckets": buckets,
        "label_histogram": np.bincount(labels, minlength=len(buckets)).tolist(),
    }
    if validation is not None:
        probs = predict_classifier(model, tokenizer, validation.prompts, max_length=config.max_length)
        predicted = np.asarray(buckets)[probs.argmax(1)]
        truth = np.asarray(validation.fewest_steps)
        metrics.update(
            validation_images=len(truth),
            validation_accuracy=float((predicted == truth).mean()),
            validation_mean_true_steps=float(truth.mean()),
            validation_mean_predicted_steps=float(predicted.mean()),
            validation_under_predicted=float((predicted < truth).mean()),
        )
    (out / "step_predictor_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("step predictor: %s", metrics)
    return out
