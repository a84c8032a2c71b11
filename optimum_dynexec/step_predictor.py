"""The StepSaver step predictor at run time: an OpenVINO text classifier over step buckets, beside the pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .policies.denoising import choose_steps

logger = logging.getLogger(__name__)


class StepPredictor:
    """Predicts, per prompt, the fewest denoising steps that keep quality.

    Args:
        model (`optimum.intel.OVModelForSequenceClassification`): one class per step bucket.
        tokenizer: its tokenizer.
        step_buckets (`list[int]`): the step count of each class, increasing.
    """

    def __init__(self, model, tokenizer, step_buckets: list[int]):
        if model.config.num_labels != len(step_buckets):
            raise ValueError(
                f"The step predictor has {model.config.num_labels} classes but the config lists "
                f"{len(step_buckets)} step buckets {step_buckets}."
            )
        self.model, self.tokenizer, self.step_buckets = model, tokenizer, list(step_buckets)

    @classmethod
    def from_folder(cls, folder: str | Path, step_buckets: list[int], **kwargs) -> StepPredictor:
        """Loads an exported predictor folder (`openvino_model.xml` and tokenizer files).

        Raises:
            `FileNotFoundError`: when the folder holds no exported predictor.
        """
        from optimum.intel import OVModelForSequenceClassification
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / "openvino_model.xml").is_file():
            raise FileNotFoundError(
                f"No step predictor in {folder} (openvino_model.xml is missing). Export the pipeline with "
                "`optimum-cli export dynexec --task text-to-image --train-step-predictor ...` or "
                "`--step-predictor <trained predictor folder>`."
            )
        model = OVModelForSequenceClassification.from_pretrained(folder, **kwargs)
        return cls(model, AutoTokenizer.from_pretrained(folder), step_buckets)

    def probabilities(self, prompts: list[str]) -> np.ndarray:
        """`(len(prompts), num_buckets)` probabilities that each bucket is the fewest sufficient step count."""
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=64, return_tensors="np")
        logits = np.asarray(self.model(**enc).logits, dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, prompts: list[str], quantile: float = 0.5) -> np.ndarray:
        """The step count of each prompt (see `policies.denoising.choose_steps`)."""
        return choose_steps(self.probabilities(prompts), self.step_buckets, quantile)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
