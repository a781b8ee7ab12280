"""Concurrent requests batched together: one model call serves every request that arrived meanwhile.

The queue is bounded (a request that does not fit is refused at once, never left to wait without end), every
request carries a deadline (one whose deadline passed while it waited is dropped before it reaches the model), and
one request cannot fail another: when a model call over several requests raises, each request is run alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Batcher", "BatchOutcome", "QueueFull", "RequestExpired"]

logger = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    """One request's share of a batch: (n, D) embeddings and ``{position: reason}`` for inputs that failed."""

    embeddings: np.ndarray
    errors: dict[int, str]


class QueueFull(Exception):
    """More inputs are waiting for the model than the queue holds."""


class RequestExpired(Exception):
    """The request's deadline passed before the model reached it."""


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future
    deadline: float


class Batcher:
    """Collects the inputs of concurrent requests for up to ``max_wait`` seconds (or ``max_batch`` inputs) and
    runs them in one call of ``encode`` on a single worker thread, so the model never runs twice at once.

    ``encode`` takes a list of items and returns an object with ``embeddings``, ``ok`` and ``errors``
    (``UniteEncoder.encode_with_errors(..., on_error="skip")`` fits).

    Args:
        encode: the model call.
        max_batch: most inputs per model call (a single larger request still runs alone).
        max_wait: seconds the first request of a batch waits for others.
        max_queue: most inputs waiting; :meth:`embed` raises :class:`QueueFull` beyond it.
    """

    def __init__(
        self, encode: Callable[[list[Any]], Any], max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 256
    ) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.requests = 0
        self.batches = 0
        self.waiting = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unite-model")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def embed(self, items: list[Any], deadline: float | None = None) -> BatchOutcome:
        """Embed ``items`` together with whatever other requests are waiting.

        Args:
            items: the request's items.
            deadline: ``loop.time()`` after which the request is dropped if the model has not started it.

        Raises:
            QueueFull: the queue cannot take ``len(items)`` more inputs now.
            RequestExpired: the deadline passed while the request waited.
        """
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if self.waiting and self.waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self.waiting} inputs are waiting for the model")
        loop = asyncio.get_running_loop()
        pending = _Pending(items, loop.create_future(), deadline if deadline is not None else float("inf"))
        self.waiting += len(items)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        size = len(batch[0].items)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                waiting = await asyncio.wait_for(self._queue.get(), max(remaining, 0))
            except asyncio.TimeoutError:
                break
            batch.append(waiting)
            size += len(waiting.items)
        return batch

    def _live(self, batch: list[_Pending]) -> list[_Pending]:
        """Drop requests that expired or whose client went away while they waited."""
        now = asyncio.get_running_loop().time()
        live = []
        for pending in batch:
            self.waiting -= len(pending.items)
            if pending.future.done():
                continue
            if now > pending.deadline:
                pending.future.set_exception(RequestExpired("the request timed out while waiting for the model"))
                continue
            live.append(pending)
        return live

    async def _run(self) -> None:
        while True:
            batch = self._live(await self._next_batch())
            if not batch:
                continue
            self.requests += len(batch)
            self.batches += 1
            await self._serve(batch)

    async def _serve(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for pending in batch for item in pending.items]
        try:
            result = await loop.run_in_executor(self._executor, self._encode, items)
        except Exception as error:
            if len(batch) > 1:  # isolate: one request's inputs must not fail the others
                logger.warning("a model call over %d requests failed; running them one by one", len(batch))
                for pending in batch:
                    await self._serve([pending])
                return
            logger.exception("model call failed for a request of %d inputs", len(items))
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        reasons = dict(result.errors)
        offset = 0
        for pending in batch:
            span = range(offset, offset + len(pending.items))
            errors = {i - offset: reasons.get(i, "not embedded") for i in span if not result.ok[i]}
            if not pending.future.done():
                pending.future.set_result(BatchOutcome(np.asarray(result.embeddings[span.start : span.stop]), errors))
            offset += len(pending.items)
