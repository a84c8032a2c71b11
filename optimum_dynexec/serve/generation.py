"""One generation request run on the model's thread: its `generate()` arguments, cancellation, and the bridge that
streams tokens from that thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..configuration import PROMPT_LOOKUP_NUM_TOKENS


class CancelCriteria(StoppingCriteria):
    """Stops every row as soon as `event` is set (the client went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


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
    new_tokens: list[int]
    target_calls: int | None  # None when the call did not speculate
    proposed: int = 0
    accepted: int = 0


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
    }
    if job.temperature is not None:
        kwargs["do_sample"] = job.temperature > 0
        if job.temperature > 0:
            kwargs["temperature"] = job.temperature
    if job.top_p is not None and kwargs.get("do_sample", model.generation_config.do_sample):
        kwargs["top_p"] = job.top_p
    if job.stop:
        kwargs.update(stop_strings=job.stop, tokenizer=tokenizer)
    has_config = model.speculative_config is not None
    if job.speculative and not has_config:
        kwargs["prompt_lookup_num_tokens"] = PROMPT_LOOKUP_NUM_TOKENS
    if job.seed is not None:
        torch.manual_seed(job.seed)
    else:  # a seeded request before must not make the next unseeded one predictable
        torch.seed()
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
