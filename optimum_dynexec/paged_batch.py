"""Several sequences in one call of the target's paged-attention form: how a batch verifies its drafts.

The paged graph takes any number of sequences per call, each with its own new tokens, past length and KV blocks
(`subsequence_begins`, `past_lens`, `block_indices`): this is how OpenVINO GenAI's continuous batching verifies. Each
sequence here owns a fixed range of blocks of the shared cache, rolls back by shortening its own length, and may leave
the batch at any call.
"""

from __future__ import annotations

import numpy as np

from .paged_runner import BLOCK_SIZE, paged_form
from .target_graph import HIDDEN_OUTPUT, LOGITS_INDICES


class PagedBatchRunner:
    """Feeds tokens of several sequences to the paged form of `target` in one call.

    Args:
        target (`OVModelForCausalLM`): the model whose paged form runs.
        num_sequences (`int`): sequences in the batch (each gets its own KV blocks).
        max_length (`int`): tokens a sequence may hold at most.
        hidden_states (`bool`): also return the last hidden states (for EAGLE).

    Raises:
        `ValueError`: when the target has no paged form.
    """

    def __init__(self, target, num_sequences: int, max_length: int, hidden_states: bool = False):
        self.form = paged_form(target, hidden_states)
        self.request = self.form.request("verify")
        self.names = {name for port in self.request.model_inputs for name in port.get_names()}
        self.has_hidden = any(HIDDEN_OUTPUT in port.get_names() for port in self.request.model_outputs)
        self.blocks_per_sequence = -(-max_length // BLOCK_SIZE)
        self.form.reserve(num_sequences * self.blocks_per_sequence)
        self.form.forget()  # the batch lays its sequences out in blocks of its own
        self.lengths = np.zeros(num_sequences, dtype=np.int64)

    def infer(
        self, feeds: dict[int, np.ndarray], logits_at: dict[int, np.ndarray] | None = None
    ) -> dict[int, dict[str, np.ndarray]]:
        """Outputs per sequence after feeding `feeds` (`{sequence: tokens (n,)}`) on top of what each holds:
        `logits` at the positions `logits_at[sequence]` of its feed (default: all `n`), and `hidden_states`
        `(n, hidden)` when compiled with it. The LM head runs on the positions asked for only."""
        order = list(feeds)
        counts = np.asarray([len(feeds[i]) for i in order], dtype=np.int64)
        past = self.lengths[order]
        totals = past + counts
        if np.any(totals > self.blocks_per_sequence * BLOCK_SIZE):
            raise ValueError(f"A sequence would exceed the {self.blocks_per_sequence * BLOCK_SIZE} tokens reserved.")
        used = -(-totals // BLOCK_SIZE)
        block_ids = [
            np.arange(i * self.blocks_per_sequence, i * self.blocks_per_sequence + u) for i, u in zip(order, used)
        ]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        logits_at = logits_at or {}
        picked = [np.asarray(logits_at.get(i, np.arange(c)), dtype=np.int64) for i, c in zip(order, counts)]
        if any(len(p) and (p.min() < 0 or p.max() >= c) for p, c in zip(picked, counts)):
            raise ValueError("logits_at asks for a position outside a sequence's feed.")
        inputs = {
            "input_ids": np.concatenate([np.asarray(feeds[i], dtype=np.int64) for i in order]),
            "position_ids": np.concatenate([np.arange(p, t) for p, t in zip(past, totals)]).astype(np.int64),
            "past_lens": past.astype(np.int32),
            "subsequence_begins": bounds.astype(np.int32),
            "block_indices": np.concatenate(block_ids).astype(np.int32),
            "block_indices_begins": np.concatenate([[0], np.cumsum(used)]).astype(np.int32),
            "max_context_len": np.asarray(totals.max(), dtype=np.int32),
            LOGITS_INDICES: np.concatenate([p + b for p, b in zip(picked, bounds)]),
        }
        out = self.request.infer({k: v for k, v in inputs.items() if k in self.names}, share_inputs=True)
        self.lengths[order] = totals
        logits = out["logits"][:, 0]
        hidden = out[HIDDEN_OUTPUT][:, 0] if self.has_hidden else None
        kept = np.concatenate([[0], np.cumsum([len(p) for p in picked])])
        result = {}
        for j, i in enumerate(order):
            result[i] = {"logits": logits[kept[j] : kept[j + 1]]}  # `infer` returns copies: no reuse overwrites them
            if hidden is not None:
                result[i][HIDDEN_OUTPUT] = hidden[bounds[j] : bounds[j + 1]]
        return result

    def trim(self, sequence: int, length: int) -> None:
        """Rolls `sequence` back to its first `length` tokens."""
        self.lengths[sequence] = min(self.lengths[sequence], length)
