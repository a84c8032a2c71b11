"""Where blocking OpenVINO calls run: one thread per compiled model behind a bounded queue, and a micro-batcher that
merges concurrent requests into one call."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import APIError

logger = logging.getLogger(__name__)


class ModelWorker:
    """Runs the calls of one compiled model one after another in a thread of its own, so the event loop stays free;
    at most `max_queue` calls wait behind the running one, the next gets HTTP 429 with `Retry-After`.

    Args:
        name (`str`): the thread's name, for logs.
        max_queue (`int`): calls that may wait; 0 serves one call at a time and refuses the rest.
        retry_after (`int`, defaults to 1): seconds a refused client is told to wait.
        on_change (`Callable[[int], None]`, *optional*): told the number of calls running or waiting on every change
            (the metrics' queue gauge).
    """

    def __init__(
        self, name: str, max_queue: int, retry_after: int = 1, on_change: Callable[[int], None] | None = None
    ):
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}.")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dynexec-{name}")
        self.max_queue, self.retry_after, self.on_change = max_queue, retry_after, on_change
        self.pending = 0  # running + waiting; only the event loop changes it

    def reserve(self) -> Callable[[], None]:
        """Takes a slot of the bounded queue (for work that reaches the thread later, through `call`) and returns
        the function that frees it (calling it again does nothing).

        Raises:
            `APIError`: 429 when `max_queue` calls already wait.
        """
        if self.pending > self.max_queue:
            raise APIError(
                429,
                f"The server is busy ({self.pending} requests running or queued for this model); retry shortly.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.pending += 1
        if self.on_change is not None:
            self.on_change(self.pending)
        released = False

        def release(*_) -> None:
            nonlocal released
            if not released:
                released = True
                self.pending -= 1
                if self.on_change is not None:
                    self.on_change(self.pending)

        return release

    def call(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        """Queues `fn(*args, **kwargs)` for the model's thread without taking a slot (the caller holds them)."""
        return asyncio.wrap_future(self.executor.submit(functools.partial(fn, *args, **kwargs)))

    def submit(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        """Queues `fn(*args, **kwargs)` for the model's thread and returns its future (the slot is freed when it
        completes or is cancelled before it started).

        Raises:
            `APIError`: 429 when `max_queue` calls already wait.
        """
        release = self.reserve()
        future = self.call(fn, *args, **kwargs)
        future.add_done_callback(release)
        return future

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        """`submit`, awaited."""
        return await self.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class MicroBatcher:
    """Merges concurrent requests into one model call: the first waiting request opens a batch, which takes every
    request arriving within `max_wait_ms` up to `max_batch_size` inputs; a request's inputs stay in one batch.

    Args:
        worker (`ModelWorker`): runs the batched calls.
        run_batch (`Callable[[list, Any], list]`): the blocking call; takes the inputs of the batch and `key`, returns
            one result per input.
        max_batch_size (`int`): inputs per call.
        max_wait_ms (`float`): how long a batch waits for more requests.
        max_queue (`int`): requests that may wait; the next gets HTTP 429.
        share_worker_queue (`bool`, defaults to `False`): every request holds a slot of the worker's bounded queue
            from its arrival to its result (so that requests the worker runs unbatched count against the same
            limit, and `max_queue` is not used); by default the batcher bounds its own queue and each batched call
            takes one slot.
    """

    def __init__(
        self,
        worker: ModelWorker,
        run_batch: Callable,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        share_worker_queue: bool = False,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        self.worker, self.run_batch, self.share_worker_queue = worker, run_batch, share_worker_queue
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000.0, max_queue
        self.queues: dict[Any, asyncio.Queue] = {}
        self.tasks: dict[Any, asyncio.Task] = {}
        self.batch_sizes: list[int] = []  # inputs per call so far (for tests and metrics)

    async def submit(self, inputs: list, key: Any = None) -> list:
        """Waits for the results of `inputs` (one per input), computed in a batch with other requests of `key`.

        Raises:
            `APIError`: 429 when `max_queue` requests already wait.
        """
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = asyncio.Queue()
            self.tasks[key] = asyncio.get_running_loop().create_task(self._serve(queue, key))
        if self.share_worker_queue:
            release = self.worker.reserve()
        elif queue.qsize() >= self.max_queue:
            raise APIError(
                429,
                f"The server is busy ({queue.qsize()} requests queued); retry shortly.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.worker.retry_after)},
            )
        future = asyncio.get_running_loop().create_future()
        if self.share_worker_queue:
            future.add_done_callback(release)
        queue.put_nowait((inputs, future))
        return await future

    async def _collect(self, queue: asyncio.Queue, first) -> tuple[list, object]:
        batch, size, carry = [first], len(first[0]), None
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch_size:
            timeout = deadline - asyncio.get_running_loop().time()
            try:
                item = queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if size + len(item[0]) > self.max_batch_size:
                carry = item
                break
            batch.append(item)
            size += len(item[0])
        return batch, carry

    async def _serve(self, queue: asyncio.Queue, key: Any) -> None:
        carry = None
        while True:
            first = carry if carry is not None else await queue.get()
            batch, carry = await self._collect(queue, first)
            batch = [(inputs, future) for inputs, future in batch if not future.done()]  # drop abandoned requests
            if not batch:
                continue
            flat = [x for inputs, _ in batch for x in inputs]
            self.batch_sizes.append(len(flat))
            try:
                run = self.worker.call if self.share_worker_queue else self.worker.submit
                results = await run(self.run_batch, flat, key)
            except Exception as error:  # every request of the batch gets the error; the batcher goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for inputs, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(inputs)])
                start += len(inputs)

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
