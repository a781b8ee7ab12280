"""Server settings: limits, key and what remote clients may make the server read."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """How ``unite serve`` behaves; every limit answers with a 4xx that names it.

    Attributes:
        api_key: when set, /v1/embeddings, /search and /thumbnail need ``Authorization: Bearer KEY``
            (or ``X-API-Key: KEY``).
        max_request_bytes: largest request body (uploads included), else 413.
        max_items: most inputs in one /v1/embeddings request, else 413.
        max_text_chars: longest text of one input, else 413.
        max_video_seconds: longest uploaded video, else 413.
        max_k: most results of one search, else 400.
        allow_server_paths: let clients name files on the server (off: uploads and base64 only).
        allow_urls: let clients give http(s) URLs for the server to fetch (off by default).
        max_batch: most inputs the model runs together when concurrent requests are batched.
        batch_wait_ms: how long the first request of a batch waits for others to join.
    """

    api_key: str | None = None
    max_request_bytes: int = 32 * 2**20
    max_items: int = 64
    max_text_chars: int = 20_000
    max_video_seconds: float = 300.0
    max_k: int = 100
    allow_server_paths: bool = False
    allow_urls: bool = False
    max_batch: int = 32
    batch_wait_ms: float = 5.0
