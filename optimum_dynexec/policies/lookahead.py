"""How many tokens to draft next, and where drafts come from without a draft model (NumPy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LookaheadSchedule:
    """Draft length per target call, as transformers' `num_assistant_tokens_schedule`.

    `"constant"` keeps `num_tokens`. `"heuristic"` (and `"heuristic_transient"`, the same within one call) grows by 2
    after a full acceptance and shrinks by 1 after a rejection, between 1 and `max_tokens`; with `back_off=True` it
    may shrink to 0 (no drafting, plain decoding) and then tries one draft token every `probe_every` calls; every
    failed probe doubles that interval (up to `max_probe_every`), a successful one resets it. A useless draft then
    costs almost nothing.
    """

    num_tokens: int = 5
    schedule: str = "heuristic"
    max_tokens: int = 16
    back_off: bool = False
    probe_every: int = 8
    max_probe_every: int = 64

    def __post_init__(self):
        if isinstance(self.num_tokens, bool) or not isinstance(self.num_tokens, int) or self.num_tokens <= 0:
            raise ValueError(f"The lookahead must be a positive number of tokens, got {self.num_tokens!r}.")
        if self.schedule not in ("constant", "heuristic", "heuristic_transient"):
            raise ValueError(f"Unknown lookahead schedule {self.schedule!r}.")
        if self.probe_every <= 0:
            raise ValueError(f"probe_every must be positive, got {self.probe_every}.")
        self.max_tokens = max(self.max_tokens, self.num_tokens)
        self.max_probe_every = max(self.max_probe_every, self.probe_every)
        self._idle = 0
        self._interval = self.probe_every

    def next(self) -> int:
        """How many tokens to draft for the coming target call."""
        if self.num_tokens > 0:
            return self.num_tokens
        self._idle += 1
        if self._idle < self._interval:
            return 0
        self._idle = 0
        return 1

    def update(self, proposed: int, accepted: int) -> None:
        """Adapts the next draft length to how many of `proposed` tokens the target `accepted`."""
        if self.schedule == "constant" or proposed == 0:
            return
        if self.num_tokens == 0:  # a probe
            self._interval = self.probe_every if accepted else min(2 * self._interval, self.max_probe_every)
        if accepted == proposed:
            self.num_tokens = min(self.max_tokens, max(self.num_tokens, 1) + 2)
        else:
            self.num_tokens = max(0 if self.back_off else 1, self.num_tokens - 1)


def prompt_lookup_candidates(tokens: np.ndarray, num_tokens: int, max_ngram: int = 3) -> np.ndarray:
    """Tokens that followed the latest earlier occurrence of the sequence's last n-gram (longest n first).

    When that occurrence is so recent that what followed it runs into the end of the sequence (the text repeats with
    a short period, e.g. a loop of one phrase), the copy runs on over the tokens it proposes, as an overlapping copy
    does: the proposal repeats the period instead of stopping short.

    Args:
        tokens (`np.ndarray` of shape `(length,)`): the prompt and what was generated so far.
        num_tokens (`int`): how many tokens to propose at most.
        max_ngram (`int`): the longest n-gram to match.

    Returns:
        `np.ndarray` of up to `num_tokens` token ids (empty when nothing matches).
    """
    length = len(tokens)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = tokens[length - n :]
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: length - 1], n)
        hits = np.flatnonzero((windows == tail).all(1))
        hits = hits[hits + n < length]
        if len(hits):
            start = hits[-1] + n
            if length - start >= num_tokens:
                return tokens[start : start + num_tokens]
            return np.resize(tokens[start:], num_tokens)  # repeats the period `tokens[start:]`
    return tokens[:0]


def batch_schedule(schedule: LookaheadSchedule, back_off: bool = False) -> LookaheadSchedule:
    """A batch row's own schedule, made from `schedule`.

    A row drafts adaptively even when the call asked for a constant length: up to the schedule's length, growing
    after a full acceptance, shrinking after a rejection. A batch makes as many verification calls as its slowest
    row needs, and a proposed position adds little to a call (on SmolLM2-135M with 2 cores a call of 4 rows costs
    ~20 ms plus ~0.5 ms per position), so a row whose drafts fail keeps proposing at least one token: backing it off
    (`back_off=True`, probing now and then) saves little verification time but makes it the batch's straggler. Back
    off only where drafting itself costs, as a separate draft model's calls do.
    """
    start = max(1, schedule.num_tokens)
    return LookaheadSchedule(
        start, "heuristic_transient", max_tokens=start, back_off=back_off, probe_every=schedule.probe_every
    )
