"""Generation requests run on the model's thread: one alone (`run_generation`), or several compatible ones merged into
one left-padded `generate()` call (`run_generation_batch`); their `generate()` arguments, cancellation, and the bridge
that streams tokens from that thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria
from transformers.generation.stopping_criteria import StopStringCriteria
from transformers.generation.streamers import BaseStreamer

from ..configuration import PROMPT_LOOKUP_NUM_TOKENS
from ..streamers import RowStreamers


class CancelCriteria(StoppingCriteria):
    """Stops every row as soon as all `events` are set (every client of the call went away)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        cancelled = all(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), cancelled, dtype=torch.bool, device=input_ids.device)


class RowStops(StoppingCriteria):
    """Stops each row of a merged call where its own request stops: its client went away, its `max_new_tokens`, or
    the token that completes one of its stop strings. Plain batch decoding then pads the row; the batched speculative
    loop takes it out of the verification calls (`speculative_loop.StopCheck` asks for each row's own answer).

    Args:
        jobs (`list[GenerationJob]`): the rows, in order.
        width (`int`): the left-padded prompts' length.
        tokenizer: the model's tokenizer (for the stop strings).
    """

    def __init__(self, jobs: list["GenerationJob"], width: int, tokenizer):
        self.jobs, self.width = jobs, width
        self.stops = [
            StopStringCriteria(tokenizer=tokenizer, stop_strings=job.stop) if job.stop else None for job in jobs
        ]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids.shape[1] - self.width
        done = [
            job.cancel.is_set()
            or new >= job.max_new_tokens
            or bool(stop is not None and stop(ids[None], scores).any())
            for job, stop, ids in zip(self.jobs, self.stops, input_ids)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Unstreamed(BaseStreamer):
    """The streamer of a row whose request does not stream."""

    def put(self, value) -> None:
        pass

    def end(self) -> None:
        pass


class TokenBridge(BaseStreamer):
    """A `generate()` streamer that hands each block of new token ids to an asyncio queue (the prompt, which
    `generate()` sends first as a 2-D tensor, is skipped); `None` marks the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, value) -> None:
        if value.ndim > 1:  # the prompt
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, [int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


@dataclass
class GenerationJob:
    """What one request asks of `generate()`.

    Args:
        input_ids (`list[int]`): the prompt's tokens.
        max_new_tokens (`int`), min_new_tokens (`int`): the output's length bounds.
        temperature (`float`, *optional*): 0 is greedy, more samples; `None` keeps the model's generation config.
        top_p (`float`, *optional*), seed (`int`, *optional*), stop (`list[str]`): as in OpenAI's API.
        speculative (`bool`, *optional*): `False` decodes plainly, `True` speculates (by prompt lookup on a folder
            without a drafter), `None` follows the folder.
    """

    input_ids: list[int]
    max_new_tokens: int
    min_new_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    speculative: bool | None = None
    cancel: threading.Event = field(default_factory=threading.Event)  # stops the generation at its next token
    disconnected: bool = False  # the client left (as opposed to a stop string found by the server)
    streamer: TokenBridge | None = None


@dataclass
class GenerationResult:
    """What one request got.

    Args:
        new_tokens (`list[int]`): its generated tokens (cut at its own length, EOS or stop string in a batch).
        target_calls (`int`, *optional*): the call's target calls after the first; `None` when it did not speculate.
        proposed (`int`), accepted (`int`): draft tokens of the call (a batch's figures are the whole batch's).
        batch_size (`int`, defaults to 1): the rows of the `generate()` call the request ran in.
    """

    new_tokens: list[int]
    target_calls: int | None  # None when the call did not speculate
    proposed: int = 0
    accepted: int = 0
    batch_size: int = 1


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to run in one `generate()` call: the decoding mode (greedy, or sampling with one
    temperature and top-p), speculation on or off, and the floor under the output length (`min_new_tokens` acts on
    every row of a call). Lengths and stop strings may differ: each row is cut to its own. Streamed requests join a
    speculative call (its loop streams every row on its own, `RowStreamers`)."""

    do_sample: bool
    temperature: float | None
    top_p: float | None
    speculative: bool
    min_new_tokens: int

    @classmethod
    def of(cls, job: GenerationJob, model, batch_speculation: bool = True) -> "BatchKey | None":
        """The key of `job` on `model`, or `None` when it must run alone (a seed, which a shared batch cannot
        reproduce, or a stream that would not speculate: plain batch decoding streams a row's padding too). Without
        `batch_speculation`, or when the folder's drafter does not speculate on batches (a draft model, see
        `OVModelForCausalLM.speculate_batches`), a shared call decodes plainly, whatever its requests ask (each
        speculates when alone)."""
        speculative = job.speculative if job.speculative is not None else model.speculative_config is not None
        on_batches = model.speculative_config is None or model.speculates_on_batches  # no drafter: prompt lookup
        speculative = speculative and batch_speculation and on_batches
        if job.seed is not None or (job.streamer is not None and not speculative):
            return None
        do_sample = bool(model.generation_config.do_sample) if job.temperature is None else job.temperature > 0
        if not do_sample:
            return cls(False, 0.0, None, speculative, job.min_new_tokens)
        return cls(True, job.temperature, job.top_p, speculative, job.min_new_tokens)


def _decoding_kwargs(model, temperature: float | None, top_p: float | None, speculative: bool | None) -> dict:
    """The sampling and drafter arguments of a call: `None` values keep the model's generation config, and a request
    that asks for speculation on a folder without a drafter speculates by prompt lookup."""
    kwargs = {}
    if temperature is not None:
        kwargs["do_sample"] = temperature > 0
        if temperature > 0:
            kwargs["temperature"] = temperature
    if top_p is not None and kwargs.get("do_sample", model.generation_config.do_sample):
        kwargs["top_p"] = top_p
    if speculative and model.speculative_config is None:
        kwargs["prompt_lookup_num_tokens"] = PROMPT_LOOKUP_NUM_TOKENS
    return kwargs


def run_generation(model, tokenizer, job: GenerationJob) -> GenerationResult:
    """Runs `job` on `model` (blocking: call it on the model's thread). Speculation is switched for this call only."""
    if job.cancel.is_set():  # the client left while the job waited
        if job.streamer is not None:
            job.streamer.end()
        return GenerationResult([], None)
    ids = torch.tensor([job.input_ids], dtype=torch.long)
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": job.max_new_tokens,
        "min_new_tokens": job.min_new_tokens or None,
        "stopping_criteria": [CancelCriteria(job.cancel)],
        "streamer": job.streamer,
        **_decoding_kwargs(model, job.temperature, job.top_p, job.speculative),
    }
    if job.stop:
        kwargs.update(stop_strings=job.stop, tokenizer=tokenizer)
    if job.seed is not None:
        torch.manual_seed(job.seed)
    else:  # a seeded request before must not make the next unseeded one predictable
        torch.seed()
    has_config = model.speculative_config is not None
    enabled = model.speculation_enabled
    model.speculation_enabled = has_config and job.speculative is not False
    try:
        out = model.generate(**{k: v for k, v in kwargs.items() if v is not None})
    finally:
        model.speculation_enabled = enabled
        if job.streamer is not None:  # a failed call ends the stream too (a second end is harmless)
            job.streamer.end()
    stats = model.last_speculative_stats
    new = out[0, ids.shape[1] :].tolist()
    if stats is None:
        return GenerationResult(new, None)
    return GenerationResult(new, stats.target_calls, stats.proposed, stats.accepted)


def run_generation_batch(model, tokenizer, jobs: list[GenerationJob], key: BatchKey) -> list[GenerationResult]:
    """Runs `jobs` (non-streaming, unseeded, all of `key`) in one left-padded `generate()` call on `model` (blocking:
    call it on the model's thread); the batch speculates in shared verification calls when `key.speculative`.

    Each row stops where it would have stopped alone (`RowStops`): at its own `max_new_tokens`, its first EOS, the
    token that completes one of its stop strings, or when its client leaves; the speculative batch then stops
    verifying it, plain batch decoding pads it, and the padding is cut off. A job cancelled before the call is left
    out of it (its result is empty). A lone remaining job runs as `run_generation` runs it.

    Args:
        model (`OVModelForCausalLM`): the model.
        tokenizer: its tokenizer (its pad id, or EOS when it has none, pads the prompts on the left).
        jobs (`list[GenerationJob]`): the rows.
        key (`BatchKey`): what the rows share.

    Returns:
        `list[GenerationResult]`: one per job, in order; `batch_size` is the number of rows of the call.
    """
    cancelled = [job.cancel.is_set() for job in jobs]
    live = [job for job, gone in zip(jobs, cancelled) if not gone]
    for job, gone in zip(jobs, cancelled):
        if gone and job.streamer is not None:
            job.streamer.end()
    if len(live) <= 1:
        alive = {id(job) for job in live}
        return [
            run_generation(model, tokenizer, job) if id(job) in alive else GenerationResult([], None) for job in jobs
        ]
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    width = max(len(job.input_ids) for job in live)
    ids = torch.tensor([[pad] * (width - len(job.input_ids)) + job.input_ids for job in live], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(job.input_ids)) + [1] * len(job.input_ids) for job in live])
    stops = RowStops(live, width, tokenizer)  # also cuts each row afterwards (`_cut`)
    kwargs = {
        "input_ids": ids,
        "attention_mask": mask,
        "max_new_tokens": max(job.max_new_tokens for job in live),
        "min_new_tokens": key.min_new_tokens or None,
        "pad_token_id": pad,
        "stopping_criteria": [stops],
        **_decoding_kwargs(model, key.temperature, key.top_p, key.speculative),
    }
    if any(job.streamer is not None for job in live):
        kwargs["streamer"] = RowStreamers([job.streamer or _Unstreamed() for job in live])
    torch.seed()  # unseeded requests only: never a previous seeded request's stream
    # `key.speculative` already says whether the folder's drafter speculates on batches (`BatchKey.of`)
    enabled = model.speculation_enabled
    model.speculation_enabled = model.speculative_config is not None and key.speculative
    try:
        out = model.generate(**{k: v for k, v in kwargs.items() if v is not None})
    finally:
        model.speculation_enabled = enabled
    stats = model.last_speculative_stats
    rows = {}
    for job, row, stop in zip(live, out[:, width:].tolist(), stops.stops):
        new = _cut(row, job, set(eos), stop)
        if stats is None:
            rows[id(job)] = GenerationResult(new, None, batch_size=len(live))
        else:
            rows[id(job)] = GenerationResult(new, stats.target_calls, stats.proposed, stats.accepted, len(live))
    return [rows.get(id(job), GenerationResult([], None)) for job in jobs]


def _cut(tokens: list[int], job: GenerationJob, eos: set[int], stop: StopStringCriteria | None) -> list[int]:
    """`tokens` (a batch row's) up to where `job` alone would have stopped: its length, its first EOS, or the token
    that completes one of its stop strings (`stop`, the row's criterion of the call, over prompt and output)."""
    tokens = tokens[: job.max_new_tokens]
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    if stop is not None:
        ids = torch.tensor([job.input_ids + tokens[:end]], dtype=torch.long)
        prompt = len(job.input_ids)
        end = next((k for k in range(1, end + 1) if bool(stop(ids[:, : prompt + k], None).any())), end)
    return tokens[:end]
