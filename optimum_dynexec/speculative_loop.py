"""A lean greedy speculative loop over OpenVINO infer requests: draft, verify, accept, roll back.

transformers' assisted generation runs a full `generate()` of the draft per target call; this loop calls the infer
requests directly, so the Python cost per target call stays small. The target verifies through its paged-attention
form (`paged_runner.PagedRunner`) when it has one, else through its stateful request (`StatefulRunner`); drafts run
on their stateful requests. Greedy only: its output is the target's own greedy continuation, token for token (exact
f32).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov

from .paged_runner import PagedRunner
from .policies.lookahead import LookaheadSchedule, prompt_lookup_candidates
from .policies.width import VerifyWidth, pad_to_width
from .target_graph import HIDDEN_OUTPUT, LOGITS_TO_KEEP, prepare_lean_model

logger = logging.getLogger(__name__)


class StatefulRunner:
    """Feeds tokens to one stateful OpenVINO causal LM and keeps track of what its states hold.

    Rolling back never reads the states (reading them converts the whole cache, ~50 ms for SmolLM2 in the default
    bf16/u8 mode): rejected positions stay in the cache and are masked out through `attention_mask`, with
    `position_ids` counting only the kept tokens. When masked positions pile up, the cache is compacted once.
    """

    single_steps = False  # a single-token call after wider ones re-shapes the request (see `VerifyWidth`)

    def __init__(self, model, max_masked: int = 256):
        model.compile()
        self.model = model
        self.request = model.request
        self.names = {name for port in self.request.model_inputs for name in port.get_names()}
        self.max_masked = max_masked
        self.kept = np.zeros(0, dtype=np.int64)  # per cached position: 1 kept, 0 rolled back

    @property
    def length(self) -> int:
        """Tokens the cache holds that count (rolled-back positions excluded)."""
        return int(self.kept.sum())

    def reset(self) -> None:
        self.request.reset_state()
        self.kept = np.zeros(0, dtype=np.int64)

    def __call__(self, tokens: np.ndarray, keep: int | None = None) -> np.ndarray:
        """Logits `(len(tokens), vocab)` after feeding `tokens` `(n,)` on top of the cached ones (the last `keep`
        rows only when the model has the `logits_to_keep` input)."""
        return self.infer(tokens, keep)["logits"][0]

    def infer(self, tokens: np.ndarray, keep: int | None = None, width: int | None = None, **extra: np.ndarray):
        """All outputs after feeding `tokens` `(n,)` (and `extra` inputs, e.g. EAGLE's `hidden_states`); `keep`
        limits the logits to the last positions when the model allows it (`target_graph.add_logits_slice`).

        `width` pads the call to that many positions (a stable input shape is cheaper, see `VerifyWidth`): the
        padding repeats the last token, is masked out at once and never kept; outputs keep their padded length, the
        first `n` rows are the tokens'. Padding needs an `attention_mask` input.
        """
        n, past = len(tokens), self.length
        tokens, pad = pad_to_width(tokens, width if "attention_mask" in self.names else None)
        if pad and (keep is not None or extra):
            raise ValueError("A padded call returns every row and takes no extra inputs (keep and extra are unset).")
        self.kept = np.concatenate([self.kept, np.ones(n, dtype=np.int64), np.zeros(pad, dtype=np.int64)])
        feeds = {"input_ids": tokens[None].astype(np.int64), **extra}
        if LOGITS_TO_KEEP in self.names:
            feeds[LOGITS_TO_KEEP] = np.asarray([keep or n + pad], dtype=np.int64)
        if "attention_mask" in self.names:
            feeds["attention_mask"] = self.kept[None]
        if "position_ids" in self.names:
            feeds["position_ids"] = np.arange(past, past + n + pad, dtype=np.int64)[None]
        if "beam_idx" in self.names:
            feeds["beam_idx"] = np.zeros(1, dtype=np.int32)
        return self.request.infer(feeds, share_inputs=True)

    def trim(self, length: int) -> None:
        """Rolls back to the first `length` kept tokens."""
        drop = self.length - length
        if drop <= 0:
            return
        self.kept[np.flatnonzero(self.kept)[-drop:]] = 0
        if len(self.kept) - length > self.max_masked:
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self.kept)
        for state in self.request.query_state():
            data = state.state.data
            state.state = ov.Tensor(np.ascontiguousarray(data[:, :, keep]))
        self.kept = np.ones(len(keep), dtype=np.int64)


@dataclass
class SpeculativeStats:
    """What one call did: target calls, tokens proposed and accepted."""

    target_calls: int = 0
    proposed: int = 0
    accepted: int = 0


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
    text so far repeats an n-gram, the draft elsewhere).

    Args:
        target (`OVModelForCausalLM`): the stateful OpenVINO model whose greedy text comes out.
        draft (`OVModelForCausalLM` or `OVEagleDraft`, *optional*): a stateful draft LM sharing the target's
            vocabulary, or an EAGLE head that drafts from the target's hidden states.
        input_ids (`np.ndarray` of shape `(1, length)`): the prompt.
        max_new_tokens (`int`): tokens to generate at most.
        prompt_lookup_num_tokens (`int`, *optional*): tokens proposed by prompt lookup; with a draft too, lookup
            proposes whenever it finds a match and the draft drafts otherwise.
        schedule (`LookaheadSchedule`, *optional*): the draft length policy (default: heuristic from 5); prompt
            lookup alone uses it too, with a draft prompt lookup proposes `prompt_lookup_num_tokens`.
        confidence_threshold (`float`): the draft stops once its top probability falls below this.
        eos_token_id: stop after any of these tokens.
        pad_patience (`int`): verification calls shorter than the last one are padded to its width (masked
            positions) up to this many times in a row, since a stable input shape is cheaper (`VerifyWidth`); `0`
            never pads. The output does not depend on it.
        paged (`bool`): verify with the target's paged-attention form (`paged_runner.PagedRunner`): cheaper
            multi-token calls, free rollback, and calls without a proposal through a request of their own (never
            padded); `False` (or a model without that form) uses its stateful request.
        single_steps (`bool`): with the paged form, calls without a proposal go through a compilation of their own
            (`PagedRunner(single_steps=True)`); `False`: through the verifying request, padded as `pad_patience` says.

    Returns:
        `(sequence, stats)`: the prompt and the new tokens `(1, length + new)`, and what the loop did.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"speculative_greedy decodes one sequence, got input_ids of shape {input_ids.shape}.")
    if draft is None and prompt_lookup_num_tokens is None:
        raise ValueError("Give a draft model or prompt_lookup_num_tokens.")
    schedule = schedule or LookaheadSchedule(prompt_lookup_num_tokens or 5)
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    stats = SpeculativeStats()
    eagle = getattr(draft, "is_eagle", False)
    if draft is not None and not eagle:
        prepare_lean_model(draft)
    runner, draft_runner = (
        _target_runner(target, eagle, paged, single_steps),
        StatefulRunner(draft) if draft is not None else None,
    )
    runner.reset()
    seq = [int(t) for t in input_ids[0]]
    prompt_length = len(seq)
    # Initialise: the target reads the prompt and picks the first token (its states then hold seq[:-1]).
    out = runner.infer(np.asarray(seq), keep=1)
    first = int(out["logits"][0, -1].argmax())
    seq.append(first)
    pending = _EaglePending()  # (feature, next token) pairs the EAGLE draft has not read yet
    if eagle:
        pending.add(seq[1:], out[HIDDEN_OUTPUT][0])
    if draft_runner is not None:
        draft_runner.reset()
    hybrid = draft is not None and prompt_lookup_num_tokens is not None
    widths = VerifyWidth(pad_patience)
    while len(seq) - prompt_length < max_new_tokens and seq[-1] not in eos:
        budget = max_new_tokens - (len(seq) - prompt_length)
        proposal, from_draft = np.empty(0, dtype=np.int64), False
        if hybrid and budget > 1:  # prompt lookup first; the draft when no n-gram matches
            proposal = prompt_lookup_candidates(np.asarray(seq), min(prompt_lookup_num_tokens, budget - 1))
        k = 0 if len(proposal) else (min(schedule.next(), budget - 1) if budget > 1 else 0)
        # Draft: up to k tokens after seq.
        if k > 0 and eagle:
            proposal, true_length = _eagle_tokens(draft_runner, draft.token_ids, pending, k, confidence_threshold)
            from_draft = True
        elif k > 0 and draft_runner is not None:
            proposal, from_draft = _draft_tokens(draft_runner, seq, k, confidence_threshold), True
        elif k > 0:
            proposal = prompt_lookup_candidates(np.asarray(seq), k)
        # Verify: the target reads the last token and the proposal in one call.
        # (a paged target verifies and steps through separate requests, so a lone token needs no padding)
        width = None if not len(proposal) and runner.single_steps else widths(len(proposal) + 1)
        out = runner.infer(np.asarray([seq[-1], *proposal.tolist()]), width=width)
        stats.target_calls += 1
        choice = out["logits"][0, : len(proposal) + 1].argmax(-1)
        # Accept: the proposal's longest prefix the target agrees with, plus the target's next token.
        n = int(np.cumprod(proposal == choice[: len(proposal)]).sum()) if len(proposal) else 0
        new = [*proposal[:n].tolist(), int(choice[n])]
        stats.proposed += len(proposal)
        stats.accepted += n
        if from_draft or draft is None:
            schedule.update(len(proposal), n)
        # Update: roll both caches back to what is now known to be right.
        runner.trim(len(seq) + n)
        if eagle:
            if from_draft and len(proposal):
                draft_runner.trim(true_length)  # drop the entries made from the draft's own features
            pending.add(new, out[HIDDEN_OUTPUT][0, : n + 1])
        elif draft_runner is not None:
            draft_runner.trim(len(seq) + n)
        for token in new:
            seq.append(token)
            if token in eos or len(seq) - prompt_length >= max_new_tokens:
                break
    if isinstance(runner, StatefulRunner):
        target._past_length = len(runner.kept)  # what the states hold; the next generate() resets them
    return np.asarray(seq, dtype=np.int64)[None], stats


def _target_runner(target, hidden_states: bool, paged: bool, single_steps: bool):
    """The paged form of `target` when asked and possible, else its stateful request (with the lean loop's edits)."""
    if paged:
        try:
            return PagedRunner(target, hidden_states=hidden_states, single_steps=single_steps)
        except ValueError as error:
            logger.warning("%s: verifying through the stateful model.", error)
    prepare_lean_model(target, hidden_states=hidden_states)
    return StatefulRunner(target)


def _top_probability(logits: np.ndarray, token: int) -> float:
    return float(1.0 / np.exp(logits - logits[token]).sum())


def _draft_tokens(runner: StatefulRunner, seq: list[int], k: int, confidence_threshold: float) -> np.ndarray:
    """Greedy draft of up to `k` tokens after `seq`; the draft first reads what its cache is missing."""
    pending = np.asarray(seq[runner.length :])
    out = []
    for _ in range(k):
        logits = runner(pending, keep=1)[-1]
        token = int(logits.argmax())
        if confidence_threshold > 0.0 and _top_probability(logits, token) < confidence_threshold:
            break
        out.append(token)
        pending = np.asarray([token])
    return np.asarray(out, dtype=np.int64)


class _EaglePending:
    """The target's features and the tokens after them, waiting to be read by the EAGLE draft."""

    def __init__(self):
        self.tokens: list[int] = []
        self.features: list[np.ndarray] = []

    def add(self, tokens: list[int], features: np.ndarray) -> None:
        self.tokens.extend(tokens)
        self.features.append(features)

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        tokens, features = np.asarray(self.tokens, dtype=np.int64), np.concatenate(self.features)
        self.tokens, self.features = [], []
        return tokens, features


def _eagle_tokens(
    runner: StatefulRunner, token_ids: np.ndarray, pending: _EaglePending, k: int, confidence_threshold: float
) -> tuple[np.ndarray, int]:
    """Up to `k` EAGLE draft tokens: the head reads the pending target features, then its own predictions.

    Returns:
        `(proposal, true_length)`: the drafted target token ids, and the draft cache length holding only entries
        made from the target's features (to roll back to after verification).
    """
    tokens, features = pending.take()
    out = runner.infer(tokens, hidden_states=features[None].astype(np.float32, copy=False))
    true_length = runner.length
    drafted = []
    for step in range(k):
        logits, feature = out["logits"][0, -1], out["features"][0, -1:]
        best = int(logits.argmax())
        if confidence_threshold > 0.0 and _top_probability(logits, best) < confidence_threshold:
            break
        drafted.append(int(token_ids[best]))
        if step + 1 < k:
            out = runner.infer(np.asarray(drafted[-1:]), hidden_states=feature[None])
    return np.asarray(drafted, dtype=np.int64), true_length
