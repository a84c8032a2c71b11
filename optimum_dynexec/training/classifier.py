"""Fine-tuning of an encoder classifier on CPU, in the package's `TrainingLoop` (seeded, resumable, progress bar)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import TextDataset
from .loop import TrainingLoop, batch_indices

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class FineTuneConfig:
    """Hyper-parameters of `fine_tune_classifier`; validated on construction.

    Args:
        epochs (`float`): passes over the training text (an epoch is `len(train) // batch_size` steps).
        batch_size (`int`), learning_rate (`float`), weight_decay (`float`): AdamW settings.
        warmup_ratio (`float`): share of the steps in linear warm-up (then linear decay to 0).
        max_length (`int`): tokenizer truncation.
        max_train_samples (`int`, *optional*): keep only the first samples.
        seed (`int`): seeds the batch order and training.
        checkpoint_every (`int`): checkpoint interval in steps.
    """

    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 64
    max_train_samples: int | None = None
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size <= 0 or self.learning_rate <= 0 or self.max_length <= 0:
            raise ValueError(f"epochs, batch_size, learning_rate and max_length must be positive, got {self}")


def fine_tune_classifier(
    model: torch.nn.Module,
    tokenizer,
    train: TextDataset,
    config: FineTuneConfig,
    checkpoint_dir: str | Path | None = None,
) -> torch.nn.Module:
    """Fine-tunes a sequence classifier with AdamW and transformers' linear warm-up/decay schedule.

    Args:
        model (`PreTrainedModel`): an `AutoModelForSequenceClassification` model, trained in place.
        tokenizer: its tokenizer.
        train (`TextDataset`): labelled training text.
        config (`FineTuneConfig`): hyper-parameters.
        checkpoint_dir (`str` or `Path`, *optional*): where `checkpoint.pt` is written every `checkpoint_every` steps
            and at the end; a run restarted with the same arguments resumes from it.

    Returns:
        The trained model, in eval mode.

    Raises:
        `ValueError`: when `train` has no labels, or the checkpoint was made with other settings.
    """
    if train.labels is None:
        raise ValueError("Fine-tuning a classifier needs labelled text.")
    train = train.subset(config.max_train_samples)
    labels = torch.tensor(train.labels)
    steps = max(1, round(config.epochs * max(1, len(train) // config.batch_size)))
    settings = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}
    loop = TrainingLoop(
        model,
        max_steps=steps,
        learning_rate=config.learning_rate,
        schedule="linear",
        warmup_steps=math.ceil(config.warmup_ratio * steps),
        weight_decay=config.weight_decay,
        checkpoint=Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None,
        save_every=config.checkpoint_every,
        settings={**settings, "train_samples": len(train)},
        seed=config.seed,
        desc="fine-tuning",
    )

    def loss_fn(step: int) -> torch.Tensor:
        idx = batch_indices(step, len(train), config.batch_size, config.seed)
        enc = tokenizer(
            [train.texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=config.max_length,
            return_tensors="pt",
        )
        return model(**enc, labels=labels[idx]).loss

    loop.run(loss_fn)
    return model


@torch.no_grad()
def predict_classifier(
    model: torch.nn.Module, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities `(len(texts), num_labels)` of a PyTorch classifier."""
    model.eval()
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc="predicting", leave=False):
        enc = tokenizer(
            texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out.append(torch.softmax(model(**enc).logits.float(), -1).numpy())
    return np.concatenate(out)
