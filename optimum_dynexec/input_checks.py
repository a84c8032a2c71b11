"""Validation of encoder inputs, so bad input fails with a message instead of an OpenVINO trace."""

from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray | None:
    if x is None or isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_encoder_inputs(config, input_ids, attention_mask=None, token_type_ids=None):
    """Returns `(input_ids, attention_mask, token_type_ids)` as int64 NumPy arrays after checking them.

    Raises:
        `ValueError`: for an empty batch, a shape mismatch, a sequence longer than the model's position table, or
            token ids outside the model's vocabulary (a tokenizer that does not match the model).
    """
    input_ids = to_numpy(input_ids)
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError(
            "input_ids must be a 2-D array (batch, sequence): call the tokenizer with padding=True and "
            f"return_tensors='np' or 'pt', got shape {None if input_ids is None else input_ids.shape}."
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"Empty batch: input_ids has shape {input_ids.shape}; give at least one non-empty text.")
    input_ids = input_ids.astype(np.int64, copy=False)
    attention_mask = np.ones_like(input_ids) if attention_mask is None else to_numpy(attention_mask).astype(np.int64)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} differs from input_ids {input_ids.shape}.")
    if not attention_mask.any(1).all():
        raise ValueError("A sample has no attended token (its attention_mask is all zeros).")
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and input_ids.shape[1] > max_positions:
        raise ValueError(
            f"Sequence length {input_ids.shape[1]} exceeds the model's maximum of {max_positions} tokens: call the "
            f"tokenizer with truncation=True, max_length={max_positions}."
        )
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(
            f"Token ids range over [{input_ids.min()}, {input_ids.max()}] but the model's vocabulary has {vocab_size} "
            "entries: the tokenizer does not match the model. Load the tokenizer from the model folder."
        )
    if token_type_ids is not None:
        token_type_ids = to_numpy(token_type_ids).astype(np.int64)
        if token_type_ids.shape != input_ids.shape:
            raise ValueError(f"token_type_ids shape {token_type_ids.shape} differs from input_ids {input_ids.shape}.")
        type_vocab = getattr(config, "type_vocab_size", None)
        if type_vocab is not None and (token_type_ids.min() < 0 or token_type_ids.max() >= type_vocab):
            raise ValueError(f"token_type_ids must lie in [0, {type_vocab - 1}] for this model.")
    return input_ids, attention_mask, token_type_ids


def check_tokenizer(config, tokenizer) -> None:
    """Checks that `tokenizer` fits a model config (vocabulary size and padding id).

    Raises:
        `ValueError`: naming the mismatch.
    """
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab_size}: they do not "
            "match. Load the tokenizer from the model folder."
        )
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and tokenizer.pad_token_id is not None and tokenizer.pad_token_id != pad:
        raise ValueError(
            f"The tokenizer pads with id {tokenizer.pad_token_id} but the model expects {pad}: they do not match."
        )
