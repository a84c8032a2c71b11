"""Fine-tuning of an encoder classifier on CPU: seeded, resumable from checkpoints, with a progress bar."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import TextDataset
from ..utils import set_seed

logger = logging.getLogger(__name__)


@dataclass
class FineTuneConfig:
    """Hyper-parameters of `fine_tune_classifier`; validated on construction."""

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


def _batches(n: int, batch_size: int, epochs: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(epochs))])[: int(round(epochs * n))]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def fine_tune_classifier(
    model: torch.nn.Module,
    tokenizer,
    train: TextDataset,
    config: FineTuneConfig,
    checkpoint_dir: str | Path | None = None,
) -> torch.nn.Module:
    """Fine-tunes a sequence classifier with AdamW and a linear warm-up/decay schedule.

    Args:
        model (`PreTrainedModel`): an `AutoModelForSequenceClassification` model, trained in place.
        tokenizer: its tokenizer.
        train (`TextDataset`): labelled training text.
        config (`FineTuneConfig`): hyper-parameters.
        checkpoint_dir (`str` or `Path`, *optional*): where a checkpoint is written every `checkpoint_every` steps;
            a run restarted with the same arguments resumes from it.

    Returns:
        The trained model, in eval mode.

    Raises:
        `ValueError`: when `train` has no labels.
    """
    if train.labels is None:
        raise ValueError("Fine-tuning a classifier needs labelled text.")
    set_seed(config.seed)
    train = train.subset(config.max_train_samples)
    batches = _batches(len(train), config.batch_size, config.epochs, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_ratio * len(batches)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (len(batches) - s) / max(1, len(batches) - warmup)))
    )
    start = 0
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        logger.info("resuming fine-tuning from step %d", start)
    labels = torch.tensor(train.labels)
    model.train()
    bar = tqdm(range(start, len(batches)), desc="fine-tuning", initial=start, total=len(batches))
    for step in bar:
        idx = batches[step]
        enc = tokenizer(
            [train.texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=config.max_length,
            return_tensors="pt",
        )
        loss = model(**enc, labels=labels[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if ckpt is not None and (step + 1) % config.checkpoint_every == 0 and step + 1 < len(batches):
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step + 1,
            }
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").rename(ckpt)
    model.eval()
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
