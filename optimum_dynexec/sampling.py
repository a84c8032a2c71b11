"""How the speculative loop turns logits into tokens: the user's logits processors, greedy or sampled, and the
acceptance rule that keeps the target's distribution (speculative rejection sampling).

The same `LogitsProcessorList` (transformers' own, built by `generate()` from the user's settings: temperature,
top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size, min_new_tokens, any custom processor) shapes the
target's scores at every verified position and the drafter's scores at every drafted one, each on the tokens before
that position. Greedy decoding takes the processed argmax; sampling accepts a drafted token `x` with probability
`min(1, p(x) / q(x))` and on a rejection draws from `norm(max(0, p - q))` (Leviathan et al. 2023, Chen et al. 2023),
so every output token follows the target's processed distribution `p` whatever the drafter proposes. A deterministic
drafter (prompt lookup) is a point mass, `q = onehot(x)`. Random draws use torch's global generator, as transformers'
sampling does, so `torch.manual_seed` (or `transformers.set_seed`) makes a call reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

# processors whose output does not depend on the tokens before the position: one call serves every row
_PREFIX_FREE = (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    MinPLogitsWarper,
    TypicalLogitsWarper,
    EpsilonLogitsWarper,
    EtaLogitsWarper,
)


@dataclass
class Proposal:
    """Tokens a drafter proposes after the sequence, and the distribution each was drawn from.

    Attributes:
        tokens (`np.ndarray` of shape `(k,)`): the proposed token ids.
        probs (`torch.Tensor` of shape `(k, vocab)`, *optional*): the drafter's processed distribution at each
            position (what the token was sampled from); `None` for a deterministic drafter (a point mass).
    """

    tokens: np.ndarray
    probs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def empty(cls) -> "Proposal":
        return cls(np.empty(0, dtype=np.int64))


def draw(weights: torch.Tensor) -> int:
    """One index drawn with probability proportional to `weights` `(vocab,)` (non-negative, not all zero), by
    inverting their cumulative sum at one uniform draw of torch's global generator: a tenth of
    `torch.multinomial`'s time on a 49k vocabulary, and never an index of weight 0."""
    cumulative = torch.cumsum(weights, 0)
    point = torch.rand((), dtype=cumulative.dtype) * cumulative[-1]
    return min(int(torch.searchsorted(cumulative, point, right=True)), len(weights) - 1)


class TokenSampler:
    """Picks tokens from logits as `generate()` would for one call: processors, then argmax or a draw.

    Args:
        processors (`LogitsProcessorList`, *optional*): transformers' processors for this call (none: raw logits).
        do_sample (`bool`): draw from the processed distribution instead of taking its argmax.
    """

    def __init__(self, processors: LogitsProcessorList | None = None, do_sample: bool = False):
        self.processors = LogitsProcessorList(processors or [])
        self.do_sample = do_sample
        self.prefix_free = all(isinstance(p, _PREFIX_FREE) for p in self.processors)

    @property
    def plain(self) -> bool:
        """Greedy on raw logits: the loop may take the argmax of the logits directly."""
        return not self.do_sample and not self.processors

    def scores(self, tokens: Sequence[int], logits: np.ndarray) -> torch.Tensor:
        """Processed scores `(rows, vocab)` of `logits` `(rows, vocab)`, whose row `i` predicts the token after
        `tokens[: len(tokens) - rows + 1 + i]` (the last row follows all of `tokens`)."""
        scores = torch.from_numpy(np.array(logits, dtype=np.float32, ndmin=2))
        if not self.processors:
            return scores
        rows, length = scores.shape[0], len(tokens)
        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        if self.prefix_free:
            return self.processors(ids[None].expand(rows, -1), scores)
        return torch.cat([self.processors(ids[None, : length - rows + 1 + i], scores[i : i + 1]) for i in range(rows)])

    def pick(self, tokens: Sequence[int], logits: np.ndarray) -> tuple[int, torch.Tensor | None]:
        """The next token after `tokens` from one row of `logits`, and the distribution it was drawn from (`None`
        when greedy)."""
        if self.plain:  # the hot path of plain greedy drafting: no copy, no torch
            return int(np.argmax(logits)), None
        scores = self.scores(tokens, logits)[-1]
        if not self.do_sample:
            return int(scores.argmax()), None
        probs = torch.softmax(scores, -1)
        return draw(probs), probs

    def confidence(self, logits: np.ndarray, probs: torch.Tensor | None) -> float:
        """A drafter's top probability at one position (for `assistant_confidence_threshold`): of `probs` when it
        sampled, else of the raw `logits`. It never depends on the drawn token, so stopping on it keeps the drafted
        tokens distributed as `probs` says."""
        if probs is not None:
            return float(probs.max())
        return float(1.0 / np.exp(logits - logits.max()).sum())

    def accept(self, tokens: Sequence[int], proposal: Proposal, logits: np.ndarray) -> tuple[int, int]:
        """Verifies `proposal` against the target's `logits` `(len(proposal) + 1, vocab)`.

        Args:
            tokens (`Sequence[int]`): the sequence so far, before the proposal.

        Returns:
            `(n, token)`: how many proposed tokens are kept, and the target's token after them.
        """
        k = len(proposal)
        if self.plain:
            choice = logits[: k + 1].argmax(-1)
            n = int(np.cumprod(proposal.tokens == choice[:k]).sum()) if k else 0
            return n, int(choice[n])
        if not self.do_sample:
            scores = self.scores([*tokens, *proposal.tokens.tolist()], logits[: k + 1])
            choice = scores.argmax(-1).numpy()
            n = int(np.cumprod(proposal.tokens == choice[:k]).sum()) if k else 0
            return n, int(choice[n])
        # position by position: the positions after the first rejection are never processed (top_p sorts the
        # vocabulary), the draws are the same as on all positions at once
        seq = [*tokens, *proposal.tokens.tolist()]

        def target_probs(i: int) -> torch.Tensor:
            return torch.softmax(self.scores(seq[: len(tokens) + i], logits[i : i + 1])[0], -1)

        for i, x in enumerate(proposal.tokens.tolist()):
            p = target_probs(i)
            q_x = 1.0 if proposal.probs is None else float(proposal.probs[i, x])
            if float(torch.rand(())) * q_x < float(p[x]):
                continue
            if proposal.probs is None:
                residual = p.clone()
                residual[x] = 0.0
            else:
                residual = (p - proposal.probs[i]).clamp_(min=0.0)
            if float(residual.sum()) <= 0.0:  # p <= q everywhere only when p == q up to rounding
                residual = p
            return i, draw(residual)
        return k, draw(target_probs(k))
