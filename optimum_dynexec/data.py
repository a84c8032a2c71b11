"""Training text for the dynamic parts: a small dataset type and the reader of users' `.txt` / `.csv` files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


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
