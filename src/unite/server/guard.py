"""The server's edge, as one pure ASGI middleware that runs before any route:

1. the Host header must name this server (DNS-rebinding defence), else 421;
2. the API key, when one is set, is checked before a byte of the body is read, else 401;
3. the body is read here, its size limited while it streams (413 as soon as it passes the limit, whether
   announced or not), its arrival time limited (408), and the bytes held in memory by all requests together
   bounded (503 with Retry-After), so that concurrent uploads cannot exhaust memory.

Only then does the request reach the app, with its body replayed from memory.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from unite.server.config import ServerConfig
from unite.server.errors import RequestError

__all__ = ["PUBLIC_PATHS", "RequestGuard"]

#: Paths served without the API key: the page, its static files and the health check.
PUBLIC_PATHS = ("/", "/healthz", "/favicon.ico")
_PUBLIC_PREFIXES = ("/static/",)


class RequestGuard:
    """Pure ASGI middleware enforcing host, key and body limits (see the module docstring)."""

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.hosts = config.hosts()
        self.inflight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        try:
            self._check_host(headers)
            self._check_key(scope, headers)
            announced = _announced_length(headers, self.config.max_request_bytes)
        except RequestError as error:
            await _respond(send, error)
            return
        await self._with_body(scope, receive, send, announced)

    def _check_host(self, headers: dict[str, list[str]]) -> None:
        values = headers.get("host", [])
        if len(values) != 1 or not values[0].strip():
            raise RequestError(400, "the request needs exactly one Host header")
        if "*" in self.hosts:
            return
        if host_name(values[0]) not in self.hosts:
            raise RequestError(
                421,
                "this server does not answer for that Host name (start it with --allowed-host NAME to add one)",
            )

    def _check_key(self, scope: dict, headers: dict[str, list[str]]) -> None:
        if self.config.api_key is None or is_public(scope.get("path", "")):
            return
        given = (headers.get("x-api-key") or [""])[0]
        authorization = (headers.get("authorization") or [""])[0]
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.config.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send Authorization: Bearer KEY)")

    async def _with_body(self, scope: dict, receive: Any, send: Any, announced: int) -> None:
        held = 0
        try:
            held = self._reserve(announced, 0)
            body, held = await self._read_body(receive, held)
        except RequestError as error:
            self.inflight -= held
            if error.status == 503:  # read on without keeping anything, so the client gets the answer cleanly
                await self._drain(receive)
            await _respond(send, error)
            return
        if body is None:  # the client went away
            self.inflight -= held
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            self.inflight -= held

    async def _read_body(self, receive: Any, held: int) -> tuple[bytes | None, int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout_s
        body = bytearray()
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise RequestError(
                    408, f"the body took longer than {self.config.body_timeout_s:g} s to arrive", limit="body_timeout_s"
                ) from None
            if message["type"] == "http.disconnect":
                return None, held
            body.extend(message.get("body", b""))
            if len(body) > self.config.max_request_bytes:
                raise _too_large(self.config.max_request_bytes)
            if len(body) > held:
                held = self._reserve(len(body), held)
            more = message.get("more_body", False)
        return bytes(body), held

    async def _drain(self, receive: Any) -> None:
        """Read the rest of a refused body, discarding it, for at most ``body_timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout_s
        read = 0
        while read <= self.config.max_request_bytes:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return
            read += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

    def _reserve(self, wanted: int, held: int) -> int:
        """Hold ``wanted`` bytes of the shared in-flight budget (``held`` already held); 503 when it is spent."""
        extra = wanted - held
        if extra <= 0:
            return held
        if self.inflight + extra > self.config.max_inflight_bytes:
            raise RequestError(
                503,
                "the server is receiving too many uploads at once; retry shortly",
                limit="max_inflight_bytes",
                headers={"Retry-After": "2"},
            )
        self.inflight += extra
        return wanted


def host_name(value: str) -> str:
    """``Example.COM:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``; a trailing dot is dropped."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def _headers(scope: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in scope.get("headers") or []:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


def _announced_length(headers: dict[str, list[str]], limit: int) -> int:
    values = headers.get("content-length", [])
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise RequestError(400, "invalid Content-Length header")
    length = int(values[0])
    if length > limit:
        raise _too_large(limit)
    return length


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"request body larger than the limit of {limit} bytes (max_request_bytes)", limit="max_request_bytes"
    )


async def _respond(send: Any, error: RequestError) -> None:
    payload = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),  # the unread body, if any, is not drained
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
