"""A lean speculative loop over OpenVINO infer requests: draft, verify, accept, roll back.

transformers' assisted generation runs a full `generate()` of the draft per target call; this loop calls the infer
requests directly, so the Python cost per target call stays small. The target verifies through its paged-attention
form (`paged_runner.PagedRunner`) when it has one, else through its stateful request (`StatefulRunner`); drafters
(`drafters`) run on their own stateful requests. Tokens are picked by a `sampling.TokenSampler` (the call's logits
processors, greedy or sampled): greedy output is the target's own greedy continuation, token for token (exact f32),
sampled output follows the target's processed distribution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from transformers import StoppingCriteriaList

from .drafters import Drafter, make_drafter
from .paged_runner import PagedRunner
from .policies.lookahead import LookaheadSchedule
from .policies.width import VerifyWidth
from .sampling import TokenSampler
from .stateful_runner import StatefulRunner
from .target_graph import HIDDEN_OUTPUT, prepare_lean_model

logger = logging.getLogger(__name__)


@dataclass
class SpeculativeStats:
    """What one call did: target calls, tokens proposed and accepted."""

    target_calls: int = 0
    proposed: int = 0
    accepted: int = 0
    reused: int = 0  # prompt tokens whose keys and values an earlier call left in the cache (not computed again)


def speculative_decode(
    target,
    input_ids: np.ndarray,
    drafter: Drafter,
    max_length: int,
    sampler: TokenSampler | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    eos_token_id: int | list[int] | None = None,
    streamer=None,
    pad_patience: int = 2,
    paged: bool = True,
    single_steps: bool = True,
    reuse_prefix: bool = True,
) -> tuple[np.ndarray, SpeculativeStats]:
    """Decodes `target` with tokens proposed by `drafter`: draft, verify in one target call, accept, roll back.

    Whatever the drafter proposes, the output follows the target: its greedy text (processed argmax) when `sampler`
    is greedy, its processed distribution when it samples (`sampling.TokenSampler.accept`).

    Args:
        target (`OVModelForCausalLM`): the stateful OpenVINO model whose text comes out.
        input_ids (`np.ndarray` of shape `(1, length)`): the prompt.
        drafter (`drafters.Drafter`): proposes tokens and learns from what was accepted.
        max_length (`int`): the prompt and the new tokens together stop at this length.
        sampler (`TokenSampler`, *optional*): logits processors, greedy or sampling (default: greedy, raw logits).
        stopping_criteria (`StoppingCriteriaList`, *optional*): transformers' criteria (EOS, stop strings, time,
            custom), checked after every token as plain decoding does (given `None` for `scores`); without them the
            loop stops at `eos_token_id`.
        eos_token_id: stop after any of these tokens (when no `stopping_criteria` are given).
        streamer (*optional*): receives each accepted block of tokens with `put`, and `end()` at the end (the
            prompt is not sent: `generate()` sends it).
        pad_patience (`int`): verification calls shorter than the last one are padded to its width (masked
            positions) up to this many times in a row, since a stable input shape is cheaper (`VerifyWidth`); `0`
            never pads. The output does not depend on it.
        paged (`bool`): verify with the target's paged-attention form (`paged_runner.PagedRunner`): cheaper
            multi-token calls, free rollback, and calls without a proposal through a request of their own (never
            padded); `False` (or a model without that form) uses its stateful request.
        single_steps (`bool`): with the paged form, calls without a proposal go through a compilation of their own
            (`PagedRunner(single_steps=True)`); `False`: through the verifying request, padded as `pad_patience` says.
        reuse_prefix (`bool`): with the paged form, start after the longest prefix of the prompt whose keys and
            values the previous call left in the cache (a repeated prompt, a conversation that goes on), as OpenVINO
            GenAI's prefix caching does; not with a drafter that reads the prompt's hidden states (EAGLE). The
            reused entries were computed in other calls' shapes, so the logits match a fresh prefill to rounding.

    Returns:
        `(sequence, stats)`: the prompt and the new tokens `(1, length + new)`, and what the loop did.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"The speculative loop decodes one sequence, got input_ids of shape {input_ids.shape}.")
    sampler = sampler or TokenSampler()
    hidden = drafter.needs_hidden_states
    seq = [int(t) for t in input_ids[0]]
    stops = StopCheck(seq, max_length, stopping_criteria, eos_token_id)
    stats = SpeculativeStats()
    runner = _target_runner(target, hidden, paged, single_steps)
    runner.reset()
    if reuse_prefix and not hidden and isinstance(runner, PagedRunner):
        stats.reused = runner.resume(seq)
    # Initialise: the target reads the prompt and picks the first token (its states then hold seq[:-1]).
    out = runner.infer(np.asarray(seq[stats.reused :]), keep=1)
    seq.append(sampler.pick(seq, out["logits"][0, -1])[0])
    done = stops(seq)
    if streamer is not None:
        streamer.put(torch.tensor(seq[-1:]))
    drafter.begin(seq, out[HIDDEN_OUTPUT][0] if hidden else None)
    widths = VerifyWidth(pad_patience)
    while not done:
        proposal = drafter.propose(seq, max_length - len(seq), sampler)  # the last may be cut, not the proposal
        # Verify: the target reads the last token and the proposal in one call.
        # (a paged target verifies and steps through separate requests, so a lone token needs no padding)
        width = None if not len(proposal) and runner.single_steps else widths(len(proposal) + 1)
        out = runner.infer(np.asarray([seq[-1], *proposal.tokens.tolist()]), width=width)
        stats.target_calls += 1
        # Accept: what the target keeps of the proposal, and its own token after that.
        n, new = accept(sampler, seq, proposal, out["logits"][0], stats)
        # Update: roll the target back to what is now known to be right; the drafter follows.
        runner.trim(len(seq) + n)
        drafter.update(seq, proposal, n, new, out[HIDDEN_OUTPUT][0, : n + 1] if hidden else None)
        kept, done = extend(seq, new, stops)
        if streamer is not None:
            streamer.put(torch.tensor(kept))
    if streamer is not None:
        streamer.end()
    if isinstance(runner, StatefulRunner):
        target._past_length = len(runner.kept)  # what the states hold; the next generate() resets them
    return np.asarray(seq, dtype=np.int64)[None], stats


def accept(sampler: TokenSampler, seq: list[int], proposal, logits: np.ndarray, stats: SpeculativeStats):
    """Verifies `proposal` after `seq` against the target's `logits` and counts it in `stats`: how many proposed
    tokens are kept, and the tokens the sequence gains (those and the target's own next one)."""
    n, token = sampler.accept(seq, proposal, logits)
    stats.proposed += len(proposal)
    stats.accepted += n
    return n, [*proposal.tokens[:n].tolist(), token]


def extend(seq: list[int], new: list[int], stops: "StopCheck") -> tuple[list[int], bool]:
    """Appends `new` to `seq` up to the first token after which it stops: what was appended, and whether it stopped."""
    for i, token in enumerate(new):
        seq.append(token)
        if stops(seq):
            return new[: i + 1], True
    return new, False


class StopCheck:
    """Whether the sequence is finished after its last token: transformers' criteria, or EOS and the length.

    In a batch, row `row` of `rows` is checked as plain batch decoding checks it: the criteria see a batch of `rows`
    sequences and row `row`'s answer is kept, so a criterion with limits of its own per row (a length, stop strings)
    stops each row where it would stop in plain decoding. The batch given to the criteria repeats this row (its other
    rows are not read).
    """

    def __init__(self, prompt: list[int], max_length: int, criteria, eos_token_id, row: int = 0, rows: int = 1):
        self.max_length, self.criteria, self.row, self.rows = max_length, criteria, row, rows
        self.eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        if criteria:
            self.ids = torch.zeros(max(max_length, len(prompt)) + 1, dtype=torch.long)
            self.ids[: len(prompt)] = torch.as_tensor(prompt)

    def __call__(self, seq: list[int]) -> bool:
        if self.criteria:
            self.ids[len(seq) - 1] = seq[-1]
            done = torch.as_tensor(self.criteria(self.ids[None, : len(seq)].expand(self.rows, -1), None))
            if bool(done.reshape(-1)[self.row] if done.numel() == self.rows else done.any()):
                return True
        elif seq[-1] in self.eos:
            return True
        return len(seq) >= self.max_length


def speculative_greedy(
    target,
    input_ids: np.ndarray,
    max_new_tokens: int,
    draft=None,
    prompt_lookup_num_tokens: int | None = None,
    schedule: LookaheadSchedule | None = None,
    confidence_threshold: float = 0.0,
    eos_token_id: int | list[int] | None = None,
    pad_patience: int = 2,
    paged: bool = True,
    single_steps: bool = True,
) -> tuple[np.ndarray, SpeculativeStats]:
    """Greedy decoding of `target` with drafts from `draft`, from prompt lookup, or both (prompt lookup where the
    text so far repeats an n-gram, the draft elsewhere): `speculative_decode` with `drafters.make_drafter`.

    Args:
        target (`OVModelForCausalLM`): the stateful OpenVINO model whose greedy text comes out.
        input_ids (`np.ndarray` of shape `(1, length)`): the prompt.
        max_new_tokens (`int`): tokens to generate at most.
        draft (`OVModelForCausalLM` or `OVEagleDraft`, *optional*): a stateful draft LM sharing the target's
            vocabulary, or an EAGLE head that drafts from the target's hidden states.
        prompt_lookup_num_tokens (`int`, *optional*): tokens proposed by prompt lookup; with a draft too, lookup
            proposes whenever it finds a match and the draft drafts otherwise.
        schedule (`LookaheadSchedule`, *optional*): the draft length policy (default: heuristic from 5); prompt
            lookup alone uses it too, with a draft prompt lookup proposes `prompt_lookup_num_tokens`.
        confidence_threshold (`float`): the draft stops once its top probability falls below this.
        eos_token_id: stop after any of these tokens.
        pad_patience, paged, single_steps: as in `speculative_decode`.

    Returns:
        `(sequence, stats)`: the prompt and the new tokens `(1, length + new)`, and what the loop did.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"speculative_greedy decodes one sequence, got input_ids of shape {input_ids.shape}.")
    drafter = make_drafter(draft, prompt_lookup_num_tokens, schedule, confidence_threshold)
    return speculative_decode(
        target,
        input_ids,
        drafter,
        input_ids.shape[1] + max_new_tokens,
        eos_token_id=eos_token_id,
        pad_patience=pad_patience,
        paged=paged,
        single_steps=single_steps,
    )


def _target_runner(target, hidden_states: bool, paged: bool, single_steps: bool):
    """The paged form of `target` when asked and possible, else its stateful request (with the lean loop's edits)."""
    if paged:
        try:
            return PagedRunner(target, hidden_states=hidden_states, single_steps=single_steps)
        except ValueError as error:
            logger.warning("%s: verifying through the stateful model.", error)
    prepare_lean_model(target, hidden_states=hidden_states)
    return StatefulRunner(target)
