"""What the routes share: the encoder, the batcher, the index follower, the limits, and the one path by which a
request's items are measured against the work budget and embedded."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from unite.errors import UniteError
from unite.server.batcher import Batcher, QueueFull, RequestExpired
from unite.server.config import ServerConfig
from unite.server.errors import RequestError, limit_error
from unite.server.follow import IndexFollower
from unite.server.thumbnails import ThumbnailCache
from unite.server.uploads import UploadFolder
from unite.types import Item

__all__ = ["ServerState", "Usage"]

logger = logging.getLogger(__name__)

#: The loop time by which the request being served must be answered (set by the route's time limit).
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("unite_request_deadline")


@dataclass
class Usage:
    """Tokens a request asked for, counted before decoding: text (with instructions) and visual."""

    text_tokens: int = 0
    visual_tokens: int = 0

    @property
    def total(self) -> int:
        return self.text_tokens + self.visual_tokens


@dataclass
class ServerState:
    """Everything a route needs; one per app, no globals."""

    config: ServerConfig
    encoder: Any
    model_name: str
    batcher: Batcher
    index: IndexFollower | None
    thumbnails: ThumbnailCache

    async def embed(self, items: list[Item], fields: list[str], uploads: UploadFolder) -> tuple[np.ndarray, Usage]:
        """Check the work budget of ``items`` (from headers, before decoding), then embed them.

        Raises:
            RequestError: 400 naming the first bad input, 413 naming the exceeded limit, 503 when the queue is
                full (with Retry-After).
        """
        usage = await run_in_threadpool(self.measure, items, fields, uploads)
        try:
            outcome = await self.batcher.embed(items, deadline=asyncio.get_running_loop().time() + self.remaining())
        except QueueFull:
            raise RequestError(
                503, "the server is busy: too many inputs are waiting; retry shortly", limit="max_queue",
                headers={"Retry-After": "1"},
            ) from None
        except RequestExpired:
            raise self.timeout() from None
        except UniteError as error:
            raise RequestError(400, uploads.scrub(str(error))) from None
        if outcome.errors:
            position, reason = sorted(outcome.errors.items())[0]
            raise RequestError(400, uploads.explain(fields[position], _strip_index(reason)))
        return outcome.embeddings, usage

    def measure(self, items: list[Item], fields: list[str], uploads: UploadFolder) -> Usage:
        """Count text and visual tokens item by item, stopping at the first input that breaks a limit."""
        usage = Usage()
        config = self.config
        for item, field in zip(items, fields):
            try:
                text, visual = self.encoder.processor.token_counts(item)
            except UniteError as error:
                raise RequestError(400, uploads.explain(field, _strip_index(str(error)))) from None
            except Exception as error:  # a client value the tokenizer or a decoder cannot take is the client's
                raise RequestError(400, f"{field}: cannot be read ({type(error).__name__})") from None
            usage.text_tokens += text
            usage.visual_tokens += visual
            if usage.text_tokens > config.max_text_tokens:
                raise limit_error(field, f"{usage.text_tokens} text tokens so far in the request", "max_text_tokens",
                                  config.max_text_tokens)
            if usage.visual_tokens > config.max_visual_tokens:
                raise limit_error(field, f"{usage.visual_tokens} visual tokens so far in the request",
                                  "max_visual_tokens", config.max_visual_tokens)
        return usage

    def remaining(self) -> float:
        """Seconds the current request may still wait for the model (its deadline, set by the route)."""
        deadline = _DEADLINE.get(None)
        if deadline is None:
            return self.config.request_timeout_s
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def timeout(self) -> RequestError:
        return RequestError(
            503, f"the request took longer than {self.config.request_timeout_s:g} s (request_timeout_s)",
            limit="request_timeout_s", headers={"Retry-After": "5"},
        )

    async def within_time_limit(self, work: Any) -> Any:
        """Await ``work`` (a coroutine) under the per-request time limit."""
        loop = asyncio.get_running_loop()
        token = _DEADLINE.set(loop.time() + self.config.request_timeout_s)
        try:
            return await asyncio.wait_for(work, self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise self.timeout() from None
        finally:
            _DEADLINE.reset(token)


def _strip_index(reason: str) -> str:
    """Encoder errors start with ``item N:``; the request field names the input instead."""
    head, sep, rest = reason.partition(": ")
    return rest if sep and head.startswith("item ") else reason
