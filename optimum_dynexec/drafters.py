"""Drafters for the speculative loop: each proposes tokens and learns from what the target accepted.

In the spirit of transformers' `CandidateGenerator` (`get_candidates` / `update_candidate_strategy`), a drafter has
two verbs, `propose` and `update`; the loop (`speculative_loop.speculative_decode`) owns verification, acceptance and
the target's rollback, so a new drafter never touches it. A drafter that needs the target's last hidden states (an
EAGLE head) says so with `needs_hidden_states`; the loop then hands them to `begin` and `update`.
"""

from __future__ import annotations

import numpy as np
import torch

from .policies.lookahead import LookaheadSchedule, prompt_lookup_candidates
from .sampling import Proposal, TokenSampler
from .stateful_runner import StatefulRunner
from .target_graph import prepare_lean_model


class Drafter:
    """What the speculative loop asks of a drafter.

    Attributes:
        needs_hidden_states (`bool`): the target must return its last hidden states (passed as `features`).
    """

    needs_hidden_states = False

    def begin(self, tokens: list[int], features: np.ndarray | None = None) -> None:
        """A new call: `tokens` is the prompt and the target's first token; `features` `(len(tokens) - 1, hidden)`
        the target's hidden states at the prompt's positions (when `needs_hidden_states`)."""

    def propose(self, tokens: list[int], max_tokens: int, sampler: TokenSampler) -> Proposal:
        """Up to `max_tokens` (0 or more) tokens to follow `tokens`, drawn as `sampler` says (empty: no proposal)."""
        raise NotImplementedError

    def update(
        self,
        tokens: list[int],
        proposal: Proposal | None,
        accepted: int,
        new_tokens: list[int],
        features: np.ndarray | None = None,
    ) -> None:
        """After a target call on `tokens` (the sequence before it): `proposal` is this drafter's (`None` when
        another drafter proposed), `accepted` how many of its tokens were kept, `new_tokens` what the sequence gained
        (the kept tokens and the target's next one), `features` the target's hidden states at those positions."""


class PromptLookupDrafter(Drafter):
    """Copies the tokens that followed the latest earlier occurrence of the sequence's last n-gram (no model).

    Args:
        num_tokens (`int`): tokens proposed per call (or the start of `schedule`).
        schedule (`LookaheadSchedule`, *optional*): the proposal length policy (default: constant `num_tokens`).
        max_ngram (`int`): the longest n-gram matched.
    """

    def __init__(self, num_tokens: int, schedule: LookaheadSchedule | None = None, max_ngram: int = 3):
        self.schedule = schedule or LookaheadSchedule(num_tokens, "constant")
        self.max_ngram = max_ngram

    def propose(self, tokens, max_tokens, sampler):
        k = _length(self.schedule, max_tokens)
        if k <= 0:
            return Proposal.empty()
        return Proposal(prompt_lookup_candidates(np.asarray(tokens), k, self.max_ngram))

    def update(self, tokens, proposal, accepted, new_tokens, features=None):
        if proposal is not None:
            self.schedule.update(len(proposal), accepted)


class DraftModelDrafter(Drafter):
    """A small causal LM sharing the target's vocabulary, run on its stateful request.

    Args:
        model (`OVModelForCausalLM`): the draft.
        schedule (`LookaheadSchedule`): the draft length policy.
        confidence_threshold (`float`): stop drafting once the draft's top probability falls below this.
        own_request (`bool`): run on an infer request of its own (one drafter per sequence of a batch).
        sample (`bool`): in a sampling call, draw from the draft's processed distribution; `False` proposes its
            argmax (see `_draft_one`).
    """

    def __init__(
        self, model, schedule: LookaheadSchedule, confidence_threshold: float = 0.0, own_request=False, sample=False
    ):
        prepare_lean_model(model)
        self.runner = StatefulRunner(model, own_request=own_request)
        self.schedule, self.confidence_threshold, self.sample = schedule, confidence_threshold, sample

    def begin(self, tokens, features=None):
        self.runner.reset()

    def propose(self, tokens, max_tokens, sampler):
        k = _length(self.schedule, max_tokens)
        seq = list(tokens)
        feed = np.asarray(seq[self.runner.length :], dtype=np.int64)  # what the draft's cache is missing
        drafted, probs = [], []
        for _ in range(k):
            logits = self.runner(feed, keep=1)[-1]
            token = _draft_one(sampler, seq, logits, self.confidence_threshold, drafted, probs, self.sample)
            if token is None:
                break
            feed = np.asarray([token], dtype=np.int64)
        return _proposal(drafted, probs)

    def update(self, tokens, proposal, accepted, new_tokens, features=None):
        self.runner.trim(len(tokens) + accepted)
        if proposal is not None:
            self.schedule.update(len(proposal), accepted)


class EagleDrafter(Drafter):
    """An EAGLE head (`eagle.OVEagleDraft`): drafts from the target's last hidden states and its own.

    The head reads each target feature with the token that followed it; after a verification it rolls back the
    entries it made from its own predicted features and reads the target's features of the kept tokens.

    Args:
        head (`OVEagleDraft`): the compiled head.
        schedule (`LookaheadSchedule`): the draft length policy.
        confidence_threshold (`float`): stop drafting once the head's top probability falls below this.
        own_request (`bool`): run on an infer request of its own (one drafter per sequence of a batch).
        sample (`bool`): in a sampling call, draw from the head's processed distribution; `False` proposes its
            argmax (see `_draft_one`).
    """

    needs_hidden_states = True

    def __init__(
        self, head, schedule: LookaheadSchedule, confidence_threshold: float = 0.0, own_request=False, sample=False
    ):
        self.runner = StatefulRunner(head, own_request=own_request)
        self.token_ids = head.token_ids
        self.vocab_size = head.config.vocab_size
        self.schedule, self.confidence_threshold, self.sample = schedule, confidence_threshold, sample
        self._tokens: list[int] = []  # target features and the tokens after them, not read by the head yet
        self._features: list[np.ndarray] = []
        self._true_length = 0  # the head's cache length made from target features only
        self._full = np.full(self.vocab_size, -np.inf, dtype=np.float32)  # `-inf` outside the head's vocabulary

    def begin(self, tokens, features=None):
        self.runner.reset()
        self._tokens, self._features = list(tokens[1:]), [features]

    def propose(self, tokens, max_tokens, sampler):
        k = _length(self.schedule, max_tokens)
        if k <= 0:
            return Proposal.empty()
        pending, feats = np.asarray(self._tokens, dtype=np.int64), np.concatenate(self._features)
        self._tokens, self._features = [], []
        out = self.runner.infer(pending, hidden_states=feats[None].astype(np.float32, copy=False))
        self._true_length = self.runner.length
        seq, drafted, probs = list(tokens), [], []
        for step in range(k):
            logits, feature = self._full_vocab(out["logits"][0, -1]), out["features"][0, -1:]
            token = _draft_one(sampler, seq, logits, self.confidence_threshold, drafted, probs, self.sample)
            if token is None:
                break
            if step + 1 < k:
                out = self.runner.infer(np.asarray([token], dtype=np.int64), hidden_states=feature[None])
        return _proposal(drafted, probs)

    def _full_vocab(self, logits: np.ndarray) -> np.ndarray:
        """The head's logits over its reduced vocabulary, spread over the target's (`-inf` elsewhere)."""
        self._full[self.token_ids] = logits  # the other entries stay `-inf`
        return self._full

    def update(self, tokens, proposal, accepted, new_tokens, features=None):
        if proposal is not None and len(proposal):
            self.runner.trim(self._true_length)  # drop the entries made from the head's own features
        if proposal is not None:
            self.schedule.update(len(proposal), accepted)
        self._tokens.extend(new_tokens)
        self._features.append(features[: len(new_tokens)])


class LookupThenDraft(Drafter):
    """Prompt lookup where the text so far repeats an n-gram, a model drafter elsewhere.

    Args:
        lookup (`PromptLookupDrafter`): tried first.
        draft (`Drafter`): drafts when lookup finds nothing; it sees every update (an EAGLE head must read every
            kept token's feature).
    """

    def __init__(self, lookup: PromptLookupDrafter, draft: Drafter):
        self.lookup, self.draft = lookup, draft
        self.needs_hidden_states = draft.needs_hidden_states
        self._last = None

    def begin(self, tokens, features=None):
        self.lookup.begin(tokens, features)
        self.draft.begin(tokens, features)

    def propose(self, tokens, max_tokens, sampler):
        proposal = self.lookup.propose(tokens, max_tokens, sampler)
        self._last = self.lookup
        if not len(proposal):
            proposal, self._last = self.draft.propose(tokens, max_tokens, sampler), self.draft
        return proposal

    def update(self, tokens, proposal, accepted, new_tokens, features=None):
        for drafter in (self.lookup, self.draft):
            own = proposal if drafter is self._last else None
            drafter.update(tokens, own, accepted if own is not None else 0, new_tokens, features)


def make_drafter(
    draft=None,
    prompt_lookup_num_tokens: int | None = None,
    schedule: LookaheadSchedule | None = None,
    confidence_threshold: float = 0.0,
    own_request: bool = False,
    lookup_schedule: LookaheadSchedule | None = None,
    sample: bool = False,
) -> Drafter:
    """The drafter for a draft model or EAGLE head, prompt lookup, or both (lookup first).

    Args:
        draft (`OVModelForCausalLM` or `OVEagleDraft`, *optional*): a model drafter.
        prompt_lookup_num_tokens (`int`, *optional*): tokens prompt lookup proposes.
        schedule (`LookaheadSchedule`, *optional*): the model drafter's length policy (prompt lookup alone: its
            own; default: heuristic from 5).
        confidence_threshold (`float`): the model drafter stops once its top probability falls below this.
        own_request (`bool`): the model drafter runs on an infer request of its own (one drafter per sequence).
        lookup_schedule (`LookaheadSchedule`, *optional*): prompt lookup's length policy beside a model drafter
            (default: constant `prompt_lookup_num_tokens`).
        sample (`bool`): in a sampling call the model drafter draws from its processed distribution; `False`
            (default) proposes its argmax, a point mass (`_draft_one`).

    Raises:
        `ValueError`: with neither a draft nor prompt lookup.
    """
    if draft is None and prompt_lookup_num_tokens is None:
        raise ValueError("Give a draft model or prompt_lookup_num_tokens.")
    if draft is None:
        return PromptLookupDrafter(prompt_lookup_num_tokens, schedule or LookaheadSchedule(prompt_lookup_num_tokens))
    schedule = schedule or LookaheadSchedule(5)
    cls = EagleDrafter if getattr(draft, "is_eagle", False) else DraftModelDrafter
    model_drafter = cls(draft, schedule, confidence_threshold, own_request, sample)
    if prompt_lookup_num_tokens is None:
        return model_drafter
    return LookupThenDraft(PromptLookupDrafter(prompt_lookup_num_tokens, lookup_schedule), model_drafter)


def _length(schedule: LookaheadSchedule, max_tokens: int) -> int:
    """The schedule's next draft length within `max_tokens` (the schedule is not consulted when nothing fits)."""
    return min(schedule.next(), max_tokens) if max_tokens > 0 else 0


def _draft_one(
    sampler: TokenSampler, seq: list[int], logits: np.ndarray, threshold: float, drafted, probs, sample: bool
) -> int | None:
    """The drafter's next token after `seq` from its `logits`, appended to `seq`, `drafted` and (its distribution)
    `probs`; `None` when the drafter's top probability is below `threshold` (then nothing is appended).

    In a sampling call with `sample=False` the drafter proposes the argmax of its raw logits, a point mass as prompt
    lookup's proposals are: the target's acceptance keeps the output's distribution exact whatever is proposed, and
    the drafter skips the processors (top-p sorts the vocabulary) and the draw at every drafted token. On SmolLM2
    with its EAGLE head (continuations, temperature 0.7, top-p 0.9, one quiet run) the head alone gave 1.20x plain
    sampling proposing its argmax and 1.03x drawing (1.55 and 1.73 tokens per target call); with prompt lookup, 1.26x
    and 1.24x.
    """
    if sampler.do_sample and not sample:
        token, dist = int(np.argmax(logits)), None
    else:
        token, dist = sampler.pick(seq, logits)
    if threshold > 0.0 and sampler.confidence(logits, dist) < threshold:
        return None
    drafted.append(token)
    probs.append(dist)
    seq.append(token)
    return token


def _proposal(tokens: list[int], probs: list[torch.Tensor | None]) -> Proposal:
    dist = torch.stack(probs) if tokens and probs[0] is not None else None
    return Proposal(np.asarray(tokens, dtype=np.int64), dist)
