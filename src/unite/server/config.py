"""Server settings: who may talk to the server, what it reads for them, and how much work one request may ask.

Every default is one a laptop survives; every limit answers with a JSON error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOOPBACK_HOSTS", "ServerConfig"]

#: Host header values always accepted: the names of this machine's loopback interface.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """How ``unite serve`` behaves.

    Attributes:
        api_key: when set, /v1/embeddings, /search and /thumbnail need ``Authorization: Bearer KEY`` (or
            ``X-API-Key: KEY``), checked before the body is read.
        allowed_hosts: Host header values accepted besides ``localhost``, ``127.0.0.1`` and ``[::1]`` (a defence
            against DNS rebinding); ``"*"`` accepts any host.
        max_request_bytes: largest request body (uploads included), else 413; enforced while the body streams.
        max_inflight_bytes: request bodies held in memory at once over all requests; beyond it 503 with
            Retry-After (bounds concurrent uploads).
        body_timeout_s: longest time a client may take to send its body, else 408.
        max_items: most inputs in one /v1/embeddings request, else 413.
        max_text_chars: longest text of one input in characters, else 413.
        max_text_tokens: most text tokens in one request (all inputs), else 413.
        max_media_per_input: most images plus videos in one input, else 413.
        max_media_per_request: most images plus videos in one request, else 413.
        max_visual_tokens: most visual tokens in one request (from the media headers, before decoding), else 413.
        max_video_seconds: longest uploaded video, else 413.
        max_k: most results of one search, else 400.
        max_queue: most inputs waiting for the model; a request that would exceed it gets 503 with Retry-After.
        request_timeout_s: longest time one request may take (uploads, checks, waiting and embedding), else 503.
        refresh_interval_s: how often the index is checked for a newer version (a build or sync meanwhile).
        allow_server_paths: let clients name files on the server (off: uploads and base64 only).
        allow_urls: let clients give http(s) URLs for the server to fetch (off by default).
        max_batch: most inputs the model runs together when concurrent requests are batched.
        batch_wait_ms: how long the first request of a batch waits for others to join.
    """

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_request_bytes: int = 32 * 2**20
    max_inflight_bytes: int = 96 * 2**20
    body_timeout_s: float = 30.0
    max_items: int = 64
    max_text_chars: int = 20_000
    max_text_tokens: int = 16_384
    max_media_per_input: int = 8
    max_media_per_request: int = 16
    max_visual_tokens: int = 16_384
    max_video_seconds: float = 300.0
    max_k: int = 100
    max_queue: int = 256
    request_timeout_s: float = 60.0
    refresh_interval_s: float = 1.0
    allow_server_paths: bool = False
    allow_urls: bool = False
    max_batch: int = 32
    batch_wait_ms: float = 5.0

    def hosts(self) -> frozenset[str]:
        """Accepted Host names (lower case, without port or IPv6 brackets)."""
        return frozenset(host.strip().lower().strip("[]") for host in (*LOOPBACK_HOSTS, *self.allowed_hosts))
