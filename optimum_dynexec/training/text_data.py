"""Token material for the drafters: texts tokenised and split by position, and random windows cut from them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def token_splits(
    tokenizer, texts: Mapping[str, str], eval_fraction: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`(train, held_out)`: every text's token ids (whitespace normalised), its last `eval_fraction` held out.

    Args:
        tokenizer: the target's tokenizer (special tokens are not added).
        texts (`Mapping[str, str]`): `{name: text}`, taken in sorted name order.
        eval_fraction (`float`): the share of every text's tokens held out, in `[0, 1)`.

    Returns:
        `tuple[list[np.ndarray], list[np.ndarray]]`: one int64 array per text in each part.

    Raises:
        `ValueError`: for no texts or an `eval_fraction` outside `[0, 1)`.
    """
    if not texts:
        raise ValueError("token_splits needs at least one text.")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    train, held = [], []
    for name in sorted(texts):
        text = " ".join(texts[name].split())
        ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        cut = int(len(ids) * (1 - eval_fraction))
        train.append(ids[:cut])
        held.append(ids[cut:])
    return train, held


def sample_windows(token_arrays: list[np.ndarray], count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """`count` windows of `length` tokens at random places of the arrays (in proportion to their lengths).

    Raises:
        `ValueError`: when no array holds a window of `length` tokens.
    """
    usable = [a for a in token_arrays if len(a) > length]
    if not usable:
        raise ValueError(f"No text holds a window of {length} tokens.")
    sizes = np.asarray([len(a) - length for a in usable], dtype=float)
    books = rng.choice(len(usable), size=count, p=sizes / sizes.sum())
    return np.stack([usable[b][(s := rng.integers(0, len(usable[b]) - length)) : s + length] for b in books])
