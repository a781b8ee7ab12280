"""The FastAPI app factory: /v1/embeddings (OpenAI-compatible), /search, /thumbnail, /healthz and the web page.

Everything the app uses is passed to :func:`create_app`; there are no module-level globals. Requests pass
:class:`unite.server.guard.RequestGuard` (host, key, body limits) before any route; each concern's routes live in
their own module (:mod:`~unite.server.embeddings`, :mod:`~unite.server.search`, :mod:`~unite.server.pages`).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from unite.server import embeddings, pages, search
from unite.server.batcher import Batcher
from unite.server.config import ServerConfig
from unite.server.errors import RequestError, error_payload, json_response
from unite.server.follow import IndexFollower
from unite.server.guard import RequestGuard
from unite.server.state import ServerState
from unite.server.thumbnails import ThumbnailCache

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(store: Any, encoder: Any, config: ServerConfig | None = None, model_name: str | None = None) -> Any:
    """Build the app.

    Args:
        store: an open :class:`unite.index.VectorStore` (``None`` serves /v1/embeddings only). The app follows
            it: builds committed while it runs are served within ``config.refresh_interval_s``.
        encoder: a :class:`unite.UniteEncoder` whose settings and weights match the index's.
        config: limits and permissions; default :class:`ServerConfig`.
        model_name: the name reported to clients (default: the last part of ``encoder.name_or_path``).

    Requests must carry a Host header naming this server (``localhost``, ``127.0.0.1``, ``[::1]`` or one of
    ``config.allowed_hosts``); with Starlette's ``TestClient`` use ``base_url="http://localhost"``.
    """
    config = config or ServerConfig()
    state = ServerState(
        config=config,
        encoder=encoder,
        model_name=model_name or _public_name(str(encoder.name_or_path)),
        batcher=Batcher(_encode_with(encoder), config.max_batch, config.batch_wait_ms / 1000, config.max_queue),
        index=_follower(store, encoder, config),
        thumbnails=ThumbnailCache(),
    )

    @asynccontextmanager
    async def lifespan(app: Any):
        await state.batcher.start()
        yield
        await state.batcher.stop()
        if state.index is not None:
            state.index.close()

    app = FastAPI(title="unite-embed", summary="UNITE multimodal embeddings and search", lifespan=lifespan)
    app.state.unite = state
    app.add_middleware(RequestGuard, config=config)
    app.mount("/static", StaticFiles(directory=str(pages.STATIC)), name="static")
    for module in (embeddings, search, pages):
        app.include_router(module.router)
    _add_error_handlers(app)
    return app


def _follower(store: Any, encoder: Any, config: ServerConfig) -> IndexFollower | None:
    if store is None:
        return None
    return IndexFollower(store, config.refresh_interval_s, getattr(encoder, "weights_fingerprint", None))


def _encode_with(encoder: Any) -> Any:
    def encode(items: list[Any]) -> Any:
        return encoder.encode_with_errors(items, show_progress_bar=False, on_error="skip")

    return encode


def _public_name(name: str) -> str:
    """A model name that never shows a server path: the folder's own name for a local folder."""
    return Path(name).name if Path(name).exists() or Path(name).is_absolute() else name


def _add_error_handlers(app: Any) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> Any:
        logger.info("%s %s refused with %d", request.method, request.url.path, error.status)
        return json_response(error.payload(), status=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Any:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        return json_response(error_payload(400, f"{where or 'request'}: {first.get('msg', 'invalid')}"), status=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Any:
        return json_response(error_payload(error.status_code, str(error.detail)), status=error.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Any:
        logger.exception("%s %s failed", request.method, request.url.path)
        return json_response(error_payload(500, "internal error (see the server log)"), status=500)
