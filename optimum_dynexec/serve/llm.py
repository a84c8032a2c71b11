"""`/v1/completions` and `/v1/chat/completions` over a causal LM (OpenAI's shapes, streamed as server-sent events)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .errors import APIError, error_body
from .generation import (
    BatchKey,
    GenerationJob,
    GenerationResult,
    TokenBridge,
    run_generation,
    run_generation_batch,
)
from .metrics import Metrics
from .schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from .workers import MicroBatcher, ModelWorker

DISCONNECT_POLL_SECONDS = 0.05
logger = logging.getLogger(__name__)


class TextAssembler:
    """Turns generated tokens into text deltas: cuts at the first stop string (which the client never sees) and
    holds back what could still become one, or an incomplete character."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.tokens: list[int] = []
        self.sent = 0  # characters already emitted
        self.stopped = False
        self.hold = max((len(s) for s in stops), default=1) - 1

    def add(self, tokens: list[int], final: bool = False) -> str:
        """The new text after `tokens` (all of it at the end when `final`)."""
        self.tokens.extend(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped, final = text[:cut], True, True
        end = len(text) if final else len(text) - self.hold
        if not final and text.endswith("\ufffd"):
            end = min(end, len(text) - 1)
        if end <= self.sent:
            return ""
        delta, self.sent = text[self.sent : end], end
        return delta


class LLMService:
    """The causal LM endpoints. Unseeded requests that arrive together and share a `BatchKey` run in one batched
    `generate()` call (up to `max_batch` rows), which speculates with `batch_speculation` (the default); streams join
    only speculative calls, seeded requests run alone.

    Args:
        model (`OVModelForCausalLM`): the loaded model.
        tokenizer: its tokenizer.
        worker (`ModelWorker`): the model's thread and queue (every request, batched or not, holds one of its slots).
        metrics (`Metrics`): where counts go.
        name (`str`): the model name echoed in responses.
        default_max_tokens (`int`): the output budget of a chat request without `max_tokens`.
        max_batch (`int`, defaults to 1): rows per generation call; 1 runs every request alone.
        max_wait_ms (`float`, defaults to 5): how long a batch waits for more requests (requests that arrive while
            a call runs join the next batch anyway).
        batch_speculation (`bool`, defaults to `True`): a call of several requests speculates (`ServeSettings`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        worker: ModelWorker,
        metrics: Metrics,
        name: str,
        default_max_tokens: int,
        max_batch: int = 1,
        max_wait_ms: float = 5.0,
        batch_speculation: bool = True,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.model, self.tokenizer, self.worker, self.metrics, self.name = model, tokenizer, worker, metrics, name
        self.default_max_tokens, self.batch_speculation = default_max_tokens, batch_speculation
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.batcher = None
        if max_batch > 1:
            self.batcher = MicroBatcher(
                worker, self._run_batch, max_batch, max_wait_ms, worker.max_queue, share_worker_queue=True
            )

    # -- prepare: the request as a GenerationJob ------------------------------------------------------------------
    def _job(self, body: SamplingFields, input_ids: list[int], max_tokens: int | None) -> GenerationJob:
        if not input_ids:
            raise APIError(
                400, "The prompt is empty: give at least one token of text.", param="prompt", code="empty_prompt"
            )
        room = None if self.context is None else self.context - len(input_ids)
        if room is not None and room < 1:
            raise APIError(
                400,
                f"The prompt has {len(input_ids)} tokens; this model's context is {self.context} tokens.",
                param="prompt",
                code="context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = self.default_max_tokens if room is None else min(self.default_max_tokens, room)
        if room is not None and max_tokens > room:
            raise APIError(
                400,
                f"This model's context is {self.context} tokens: the prompt ({len(input_ids)} tokens) leaves room for "
                f"{room}, but max_tokens is {max_tokens}.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if body.min_tokens > max_tokens:
            raise APIError(
                400,
                f"min_tokens ({body.min_tokens}) exceeds max_tokens ({max_tokens}).",
                param="min_tokens",
                code="invalid_value",
            )
        stops = body.stop_list()
        if len(stops) > 4:
            raise APIError(400, f"At most 4 stop sequences, got {len(stops)}.", param="stop", code="invalid_value")
        return GenerationJob(
            input_ids=input_ids,
            max_new_tokens=max_tokens,
            min_new_tokens=body.min_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=stops,
            speculative=body.speculative,
        )

    def completion_job(self, body: CompletionRequest) -> GenerationJob:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(
                400,
                f"This server takes one prompt per request, got {len(prompts)}.",
                param="prompt",
                code="invalid_value",
            )
        return self._job(body, self.tokenizer(prompts[0])["input_ids"], body.max_tokens)

    def chat_job(self, body: ChatCompletionRequest) -> GenerationJob:
        if not getattr(self.tokenizer, "chat_template", None):
            raise APIError(
                400,
                "This model's tokenizer has no chat template: use /v1/completions.",
                param="messages",
                code="no_chat_template",
            )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # a template that raises on these messages (e.g. roles out of order)
            raise APIError(
                400, f"The chat template refused these messages: {error}", param="messages", code="invalid_value"
            ) from error
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._job(body, ids, body.max_completion_tokens or body.max_tokens)

    # -- run -----------------------------------------------------------------------------------------------------
    def _submit(self, job: GenerationJob) -> asyncio.Future:
        """Queues `job` for the model's thread, alone or in the next batch of its key; its counts reach the metrics
        when it ends, however the request ends.

        Raises:
            `APIError`: 429 when the queue is full (for a batched job, from the returned future).
        """
        key = None if self.batcher is None else BatchKey.of(job, self.model, self.batch_speculation)
        if key is None:
            future = self.worker.submit(run_generation, self.model, self.tokenizer, job)
        else:
            future = asyncio.ensure_future(self._batched(job, key))
        future.add_done_callback(lambda done: self._record(job, done, alone=key is None))
        return future

    async def _batched(self, job: GenerationJob, key: BatchKey) -> GenerationResult:
        return (await self.batcher.submit([job], key))[0]

    def _run_batch(self, jobs: list[GenerationJob], key: BatchKey) -> list[GenerationResult]:
        """One `generate()` call over the jobs of a batch (on the model's thread)."""
        results = run_generation_batch(self.model, self.tokenizer, jobs, key)
        self._record_call([r for r in results if r.new_tokens])
        return results

    def _record_call(self, rows: list[GenerationResult]) -> None:
        """The counts of one `generate()` call: its rows (those that ran), its target calls and drafts."""
        if not rows:
            return
        m, first = self.metrics, rows[0]
        m.generation_batch_size.observe(len(rows))
        if first.target_calls is not None:
            m.target_calls.inc(first.target_calls + 1)
            m.proposed_tokens.inc(first.proposed)
            m.accepted_tokens.inc(first.accepted)
            m.tokens_per_call.observe(sum(len(r.new_tokens) for r in rows) / len(rows) / (first.target_calls + 1))

    def _record(self, job: GenerationJob, done: asyncio.Future, alone: bool) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        result, m = done.result(), self.metrics
        m.prompt_tokens.inc(len(job.input_ids))
        m.generated_tokens.inc(len(result.new_tokens))
        if job.disconnected:
            m.cancelled.inc()
        if alone and result.new_tokens:  # a batch's call is counted once, by `_run_batch`
            self._record_call([result])

    def _finish_reason(self, job: GenerationJob, result: GenerationResult, assembler: TextAssembler) -> str:
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        if assembler.stopped or (result.new_tokens and result.new_tokens[-1] in eos):
            return "stop"
        return "length" if len(result.new_tokens) >= job.max_new_tokens else "stop"

    @staticmethod
    async def _watch(request: Request, job: GenerationJob) -> None:
        """Sets the job's cancel flag once the client disconnects (which stops the generation at its next token)."""
        while not job.cancel.is_set():
            if await request.is_disconnected():
                job.disconnected = True
                job.cancel.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    async def generate(self, request: Request, job: GenerationJob) -> GenerationResult:
        """Runs `job` on the model's thread; a client that disconnects cancels it."""
        future = self._submit(job)
        watcher = asyncio.create_task(self._watch(request, job))
        try:
            result = await asyncio.shield(future)
        finally:
            watcher.cancel()
            job.cancel.set()  # if we were cancelled ourselves, stop the thread's work too
        return result

    def usage(self, job: GenerationJob, result: GenerationResult) -> dict:
        n = len(result.new_tokens)
        return {"prompt_tokens": len(job.input_ids), "completion_tokens": n, "total_tokens": len(job.input_ids) + n}

    @staticmethod
    def dynexec_info(result: GenerationResult) -> dict:
        info = {"speculative": result.target_calls is not None}
        if result.target_calls is not None:  # a batch's figures are the whole batch's
            info.update(
                target_calls=result.target_calls + 1, proposed_tokens=result.proposed, accepted_tokens=result.accepted
            )
        if result.batch_size > 1:
            info["batch_size"] = result.batch_size
        return info

    async def stream(
        self, request: Request, job: GenerationJob, chat: bool, include_usage: bool
    ) -> AsyncIterator[str]:
        """Server-sent events of OpenAI's chunk shape, ending in `data: [DONE]`."""
        job.streamer = TokenBridge(asyncio.get_running_loop())
        future = self._submit(job)  # a 429 comes before the stream opens
        return self._events(request, job, future, chat, include_usage)

    async def _events(self, request, job, future, chat: bool, include_usage: bool) -> AsyncIterator[str]:
        ident, created = _ident(chat), int(time.time())
        assembler = TextAssembler(self.tokenizer, job.stop)
        watcher = asyncio.create_task(self._watch(request, job))

        def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                payload = {} if delta is None else {"content": delta}
                if role:
                    payload = {"role": "assistant", "content": ""}
                choice = {"index": 0, "delta": payload, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            data = {
                "id": ident,
                "object": _object(chat, stream=True),
                "created": created,
                "model": self.name,
                "choices": [choice],
            }
            return f"data: {json.dumps(data)}\n\n"

        try:
            if chat:
                yield chunk(None, None, role=True)
            while True:
                tokens = await job.streamer.queue.get()
                if tokens is None:
                    break
                delta = assembler.add(tokens)
                if assembler.stopped:
                    job.cancel.set()
                if delta:
                    yield chunk(delta, None)
            try:
                result = await future
            except Exception as error:  # the stream is open: the error travels as an event (OpenAI's shape)
                status = error.status if isinstance(error, APIError) else 400 if isinstance(error, ValueError) else 500
                if status == 500:
                    logger.exception("generation failed mid-stream")
                yield f"data: {json.dumps(error_body(status, str(error)))}\n\n"
                return
            tail = assembler.add([], final=True)
            if tail:
                yield chunk(tail, None)
            yield chunk(None, self._finish_reason(job, result, assembler))
            if include_usage:
                data = {
                    "id": ident,
                    "object": _object(chat, stream=True),
                    "created": created,
                    "model": self.name,
                    "choices": [],
                    "usage": self.usage(job, result),
                }
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            if not future.done():  # the client left mid-stream: stop the generation, free the slot
                job.disconnected = True
                job.cancel.set()

    # -- respond -------------------------------------------------------------------------------------------------
    async def respond(self, request: Request, body: SamplingFields, job: GenerationJob, chat: bool):
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            events = await self.stream(request, job, chat, include)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await self.generate(request, job)
        assembler = TextAssembler(self.tokenizer, job.stop)
        text = assembler.add(result.new_tokens, final=True)
        finish = self._finish_reason(job, result, assembler)
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {
            "id": _ident(chat),
            "object": _object(chat, stream=False),
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
            "usage": self.usage(job, result),
            "dynexec": self.dynexec_info(result),
        }

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/v1/completions")
        async def completions(body: CompletionRequest, request: Request):
            return await self.respond(request, body, self.completion_job(body), chat=False)

        @router.post("/v1/chat/completions")
        async def chat_completions(body: ChatCompletionRequest, request: Request):
            return await self.respond(request, body, self.chat_job(body), chat=True)

        return router


def _ident(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def _object(chat: bool, stream: bool) -> str:
    if chat:
        return "chat.completion.chunk" if stream else "chat.completion"
    return "text_completion"
