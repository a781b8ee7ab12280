"""Concurrent requests batched together: one model call serves every request that arrived meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Batcher", "BatchOutcome"]

logger = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    """One request's share of a batch: (n, D) embeddings and ``{position: reason}`` for inputs that failed."""

    embeddings: np.ndarray
    errors: dict[int, str]


class Batcher:
    """Collects the inputs of concurrent requests for up to ``max_wait`` seconds (or ``max_batch`` inputs) and
    runs them in one call of ``encode`` on a single worker thread, so the model never runs twice at once.

    ``encode`` takes a list of items and returns an object with ``embeddings``, ``ok`` and ``errors``
    (``UniteEncoder.encode_with_errors(..., on_error="skip")`` fits).
    """

    def __init__(self, encode: Callable[[list[Any]], Any], max_batch: int = 32, max_wait: float = 0.005) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.requests = 0
        self.batches = 0
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

    async def embed(self, items: list[Any]) -> BatchOutcome:
        """Embed ``items`` together with whatever other requests are waiting."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _next_batch(self) -> list[tuple[list[Any], asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        size = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                waiting = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            batch.append(waiting)
            size += len(waiting[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            items = [item for request_items, _ in batch for item in request_items]
            self.requests += len(batch)
            self.batches += 1
            try:
                result = await loop.run_in_executor(self._executor, self._encode, items)
            except Exception as error:  # the model failed for the whole batch: every request gets the error
                logger.exception("model call failed for a batch of %d inputs", len(items))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            reasons = dict(result.errors)
            offset = 0
            for request_items, future in batch:
                span = range(offset, offset + len(request_items))
                errors = {i - offset: reasons.get(i, "not embedded") for i in span if not result.ok[i]}
                if not future.done():
                    future.set_result(BatchOutcome(np.asarray(result.embeddings[span.start : span.stop]), errors))
                offset += len(request_items)
