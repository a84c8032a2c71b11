"""The speculative loop over a batch: every sequence drafts for itself, and one paged call verifies them all.

Each sequence has its own drafter (and draft length, acceptance and rollback); the target's paged form
(`paged_batch.PagedBatchRunner`) reads every sequence's last token and proposal in one call, and a finished sequence
leaves the batch. Left padding stays out of the target's and the drafters' caches; the logits processors and stopping
criteria see each row as plain batch decoding does (padding included; a criterion with limits per row applies row
`i`'s to row `i`), so greedy output equals optimum-intel's plain batch `generate()`, sampling keeps each row's
distribution, and a row leaves the batch where it would stop in plain decoding.
"""

from __future__ import annotations

import numpy as np
import torch

from .drafters import Drafter
from .paged_batch import PagedBatchRunner
from .policies.width import VerifyWidth, pad_to_width
from .sampling import TokenSampler
from .speculative_loop import SpeculativeStats, StopCheck, accept, extend
from .streamers import RowStreamers
from .target_graph import HIDDEN_OUTPUT

_MAX_WIDTH = 32  # positions a row feeds per call at most (a proposal is shorter than the lookahead cap of 16)


def speculative_decode_batch(
    target,
    prompts: list[list[int]],
    pads: list[int],
    drafters: list[Drafter],
    max_new_tokens: int,
    sampler: TokenSampler | None = None,
    stopping_criteria=None,
    eos_token_id: int | list[int] | None = None,
    pad_patience: int = 2,
    streamer: RowStreamers | None = None,
) -> tuple[list[list[int]], SpeculativeStats]:
    """Decodes several prompts at once with speculation.

    Args:
        target (`OVModelForCausalLM`): the model (it needs a paged-attention form).
        prompts (`list[list[int]]`): each row's prompt without padding.
        pads (`list[int]`): each row's left padding, as the processors and criteria see it (`[pad] * k + prompt`).
        drafters (`list[Drafter]`): one per row, each with its own state.
        max_new_tokens (`int`): new tokens per row at most.
        sampler, stopping_criteria, eos_token_id, pad_patience: as in `speculative_loop.speculative_decode` (the
            padding keeps a call's total number of positions stable, see `_padded`).
        streamer (`RowStreamers`, *optional*): row `i`'s accepted tokens go to its own streamer, which ends as soon
            as the row stops (the prompts are not sent: `generate()` sends them).

    Returns:
        `(new_tokens, stats)`: each row's new tokens, and what the loop did (a target call serves every row).
    """
    if len(prompts) != len(drafters) or len(prompts) != len(pads):
        raise ValueError("Give one drafter and one padding per prompt.")
    sampler = sampler or TokenSampler()
    hidden = drafters[0].needs_hidden_states
    # room for the longest row, plus a verification call's padding past its end
    runner = PagedBatchRunner(target, len(prompts), max(map(len, prompts)) + max_new_tokens + _MAX_WIDTH, hidden)
    widths = VerifyWidth(pad_patience)
    rows = [[*pad, *prompt] for pad, prompt in zip(pads, prompts)]  # what processors and criteria see
    offsets = [len(pad) for pad in pads]
    stops = [
        StopCheck(row, len(row) + max_new_tokens, stopping_criteria, eos_token_id, i, len(rows))
        for i, row in enumerate(rows)
    ]
    stats = SpeculativeStats()
    # the prefill reads each prompt's last logits only: the LM head skips the other positions
    prefill = {i: np.asarray(p, dtype=np.int64) for i, p in enumerate(prompts)}
    out = runner.infer(prefill, {i: [len(p) - 1] for i, p in prefill.items()})
    active, finished = [], set()
    for i, row in enumerate(rows):
        row.append(sampler.pick(row, out[i]["logits"][-1])[0])
        drafters[i].begin(row[offsets[i] :], out[i][HIDDEN_OUTPUT] if hidden else None)
        if not _stream(streamer, i, row[-1:], stops[i](row)):
            active.append(i)
    while active:
        proposals = {}
        for i in active:
            room = stops[i].max_length - len(rows[i])
            proposals[i] = drafters[i].propose(rows[i][offsets[i] :], room, sampler)
        feeds = {i: [rows[i][-1], *proposals[i].tokens.tolist()] for i in active}
        out = runner.infer(_padded(feeds, widths), {i: np.arange(len(f)) for i, f in feeds.items()})
        stats.target_calls += 1
        for i in active:
            proposal, row = proposals[i], rows[i]
            n, new = accept(sampler, row, proposal, out[i]["logits"], stats)
            runner.trim(i, len(row) - offsets[i] + n)
            features = out[i][HIDDEN_OUTPUT][: n + 1] if hidden else None
            drafters[i].update(row[offsets[i] :], proposal, n, new, features)
            kept, done = extend(row, new, stops[i])
            if _stream(streamer, i, kept, done):
                finished.add(i)
        active = [i for i in active if i not in finished]
    return [row[len(pad) + len(prompt) :] for row, pad, prompt in zip(rows, pads, prompts)], stats


def _stream(streamer: RowStreamers | None, row: int, tokens: list[int], done: bool) -> bool:
    """Sends row `row`'s new `tokens` to its streamer (ending it when `done`); returns `done`."""
    if streamer is not None:
        streamer.put_row(row, torch.tensor(tokens))
        if done:
            streamer.end_row(row)
    return done


def _padded(feeds: dict[int, list[int]], widths: VerifyWidth) -> dict[int, np.ndarray]:
    """The rows' feeds, padded so that the call's total number of positions follows `widths`.

    A stable call shape is cheaper (`VerifyWidth`), and the call's cost grows with its total positions, not its
    widest row: the padding is spread over the rows (a row's padding repeats its last token after its proposal and is
    rolled back with the rejected tokens), each row staying within `_MAX_WIDTH` positions.
    """
    needed = sum(map(len, feeds.values()))
    room = {i: _MAX_WIDTH - len(f) for i, f in feeds.items()}
    pad = min(widths(needed), needed + sum(room.values())) - needed
    extra = dict.fromkeys(feeds, 0)
    while pad > 0:
        for i in feeds:
            if pad > 0 and extra[i] < room[i]:
                extra[i] += 1
                pad -= 1
    return {i: pad_to_width(np.asarray(f, dtype=np.int64), len(f) + extra[i])[0] for i, f in feeds.items()}
