"""The FastAPI app factory: /v1/embeddings (OpenAI-compatible), /search, /thumbnail, /healthz and the web page.

Everything the app uses is passed to :func:`create_app`; there are no module-level globals.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from unite.errors import UniteError
from unite.server.batcher import Batcher
from unite.server.config import ServerConfig
from unite.server.schemas import EmbeddingRequest, EmbeddingResponse, SearchRequest, SearchResponse
from unite.server.uploads import RequestError, UploadFolder
from unite.types import Item, Modality

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_PART_KINDS = {"text": "text", "image_url": "image", "video_url": "video", "image": "image", "video": "video"}


def create_app(store: Any, encoder: Any, config: ServerConfig | None = None, model_name: str | None = None) -> Any:
    """Build the app.

    Args:
        store: an open :class:`unite.index.VectorStore` (``None`` serves /v1/embeddings only).
        encoder: a :class:`unite.UniteEncoder` whose settings match the index's.
        config: limits and permissions; default :class:`ServerConfig`.
        model_name: the name reported to clients (default: the last part of ``encoder.name_or_path``).
    """
    config = config or ServerConfig()
    name = str(encoder.name_or_path)
    model_name = model_name or (Path(name).name if Path(name).exists() else name)  # never a server-side path
    settings = encoder.settings

    def encode(items: list[Any]) -> Any:
        return encoder.encode_with_errors(items, show_progress_bar=False, on_error="skip")

    batcher = Batcher(encode, max_batch=config.max_batch, max_wait=config.batch_wait_ms / 1000)
    store_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unite-store")

    @asynccontextmanager
    async def lifespan(app: Any):
        await batcher.start()
        yield
        await batcher.stop()
        store_pool.shutdown(wait=True)

    app = FastAPI(title="unite-embed", summary="UNITE multimodal embeddings and search", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    static = resources.files("unite.server") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    async def in_store(function: Any, *args: Any) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(store_pool, function, *args)

    def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send Authorization: Bearer KEY)")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        logger.info("%s %s rejected with %d", request.method, request.url.path, error.status)
        return _error(error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    async def embed_items(items: list[Item], uploads: UploadFolder, fields: list[str]) -> np.ndarray:
        try:
            outcome = await batcher.embed(items)
        except UniteError as error:
            raise RequestError(400, uploads.scrub(str(error))) from None
        if outcome.errors:
            position, reason = sorted(outcome.errors.items())[0]
            raise RequestError(400, f"{fields[position]}: {uploads.scrub(_strip_index(reason))}")
        return outcome.embeddings

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        items = await in_store(store.count) if store is not None else 0
        return {
            "status": "ok",
            "model": model_name,
            "items": items,
            "dim": int(encoder.embedding_dim),
            "auth": config.api_key is not None,
            "batched": {"requests": batcher.requests, "batches": batcher.batches},
        }

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=[Depends(require_key)])
    async def embeddings(body: EmbeddingRequest) -> EmbeddingResponse:
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs:
            raise RequestError(400, "input: empty list")
        if len(inputs) > config.max_items:
            raise RequestError(413, f"input: {len(inputs)} inputs, more than the limit of {config.max_items}")
        if body.dimensions is not None and body.dimensions != encoder.embedding_dim:
            raise RequestError(400, f"dimensions: this model gives {encoder.embedding_dim}, got {body.dimensions}")
        with UploadFolder(config, settings) as uploads:
            items = [_input_item(value, f"input[{i}]", uploads, config) for i, value in enumerate(inputs)]
            vectors = await embed_items(items, uploads, [f"input[{i}]" for i in range(len(items))])
        data = [
            {"index": i, "embedding": _encode_vector(vector, body.encoding_format)} for i, vector in enumerate(vectors)
        ]
        logger.info("embedded %d inputs", len(items))
        return EmbeddingResponse(data=data, model=model_name)

    @app.post("/search", response_model=SearchResponse, dependencies=[Depends(require_key)])
    async def search(request: Request) -> SearchResponse:
        if store is None:
            raise RequestError(404, "this server has no index")
        started = time.perf_counter()
        with UploadFolder(config, settings) as uploads:
            query, uploaded = await _search_query(request, uploads)
            modality = _modality(query.modality)
            if not 1 <= query.k <= config.max_k:
                raise RequestError(400, f"k: must lie in [1, {config.max_k}], got {query.k}")
            item = _search_item(query, uploaded, uploads, config)
            vector = (await embed_items([item], uploads, ["query"]))[0]
        hits = await in_store(lambda: store.search(vector, k=query.k, modality=modality))
        took = (time.perf_counter() - started) * 1000
        logger.info("search k=%d modality=%s: %d hits in %.1f ms", query.k, modality, len(hits), took)
        results = [dict(hit.to_dict(), thumbnail=_thumbnail_url(hit)) for hit in hits]
        return SearchResponse(model=model_name, results=results, took_ms=round(took, 2))

    from unite.server.thumbnails import ThumbnailCache, make_thumbnail

    cache = ThumbnailCache()

    @app.get("/thumbnail", dependencies=[Depends(require_key)])
    async def thumbnail(id: str) -> Response:  # noqa: A002 (the query parameter is called id)
        if store is None:
            raise RequestError(404, "this server has no index")
        data = cache.get(id)
        if data is None:
            hit = await in_store(store.get, id)
            if hit is None:
                raise RequestError(404, "no indexed item has this id")
            if hit.modality == "text":
                raise RequestError(404, "text items have no thumbnail")
            try:
                data = await run_in_threadpool(make_thumbnail, hit, settings)
            except UniteError:
                raise RequestError(404, "the indexed file can no longer be read") from None
            cache.put(id, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return app


class BodyLimit:
    """Pure ASGI middleware: refuse a body larger than ``max_bytes`` with 413, whether announced or streamed."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = dict(scope.get("headers") or []).get(b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > self.max_bytes:
            await _send_json(send, 413, self._message())
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await _send_json(send, 413, self._message())
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes} bytes"


async def _send_json(send: Any, status: int, message: str) -> None:
    import json

    payload = json.dumps({"error": {"message": message, "code": status}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _error(status: int, message: str) -> Any:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _strip_index(reason: str) -> str:
    """Encoder errors start with ``item N:``; the request field names the input instead."""
    head, sep, rest = reason.partition(": ")
    return rest if sep and head.startswith("item ") else reason


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]


def _modality(value: str | None) -> int | None:
    if value in (None, "", "all", "any"):
        return None
    try:
        return int(Modality.parse(value))
    except UniteError as error:
        raise RequestError(400, f"modality: {error}") from None


def _thumbnail_url(hit: Any) -> str | None:
    return None if hit.modality == "text" else f"/thumbnail?id={quote(hit.id, safe='')}"


def _check_text(text: Any, field: str, config: ServerConfig) -> str:
    if not isinstance(text, str):
        raise RequestError(400, f"{field}: expected a string, got {type(text).__name__}")
    if len(text) > config.max_text_chars:
        raise RequestError(413, f"{field}: {len(text)} characters, more than the limit of {config.max_text_chars}")
    return text


def _input_item(value: Any, field: str, uploads: UploadFolder, config: ServerConfig) -> Item:
    """One /v1/embeddings input: a string, a content part, a list of parts, or {"text", "image", "video"}."""
    if isinstance(value, str):
        return _item(_check_text(value, field, config), [], [], field)
    if isinstance(value, dict) and "type" not in value:
        unknown = set(value) - {"text", "image", "video"}
        if unknown:
            raise RequestError(
                400, f"{field}: unknown key(s) {', '.join(sorted(unknown))}; expected text, image, video"
            )
        parts = [{"type": key, key: value[key]} for key in ("text", "image", "video") if value.get(key) is not None]
    elif isinstance(value, dict):
        parts = [value]
    elif isinstance(value, list) and value and all(isinstance(part, dict) for part in value):
        parts = value
    else:
        raise RequestError(400, f"{field}: expected a string, a content part or a list of content parts")
    texts, images, videos = [], [], []
    for number, part in enumerate(parts):
        where = f"{field}[{number}]" if isinstance(value, list) else field
        kind = _PART_KINDS.get(part.get("type"))
        if kind is None:
            raise RequestError(
                400, f"{where}: unknown part type {part.get('type')!r}; expected text, image_url, video_url"
            )
        payload = part.get(part["type"])
        if kind == "text":
            texts.append(_check_text(payload, where, config))
            continue
        url = payload.get("url") if isinstance(payload, dict) else payload
        (images if kind == "image" else videos).append(uploads.media(url, kind, where))
    return _item("\n".join(texts) if texts else None, images, videos, field)


def _item(text: str | None, images: list[str], videos: list[str], field: str) -> Item:
    try:
        return Item(text=text, images=tuple(images), videos=tuple(videos))
    except UniteError as error:
        raise RequestError(400, f"{field}: {error}") from None


async def _search_query(request: Any, uploads: UploadFolder) -> tuple[SearchRequest, dict[str, str]]:
    """The query of /search from JSON or from a multipart form (whose files are saved as uploads)."""
    content_type = request.headers.get("content-type", "")
    uploaded: dict[str, str] = {}
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=2, max_fields=8)
        body: Any = {key: form.get(key) for key in ("text", "modality", "k") if form.get(key) not in (None, "")}
        for key in ("image", "video"):
            upload = form.get(key)
            if upload is not None and not isinstance(upload, str):
                data = await upload.read()
                if data:
                    uploaded[key] = uploads.save(data, key, key)
    else:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "expected a JSON object {text, image, video, modality, k}")
    try:
        return SearchRequest(**body), uploaded
    except ValueError as error:
        first = error.errors()[0] if hasattr(error, "errors") else {"loc": (), "msg": str(error)}
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise RequestError(400, f"{where or 'body'}: {first.get('msg')}") from None


def _search_item(query: SearchRequest, uploaded: dict[str, str], uploads: UploadFolder, config: ServerConfig) -> Item:
    text = _check_text(query.text, "text", config) if query.text is not None else None
    media: dict[str, list[str]] = {"image": [], "video": []}
    for key in media:
        if key in uploaded:
            media[key].append(uploaded[key])
        elif getattr(query, key):
            media[key].append(uploads.media(getattr(query, key), key, key))
    if not (text and text.strip()) and not media["image"] and not media["video"]:
        raise RequestError(400, "give a query: text, image or video (or a mix)")
    return _item(text or None, media["image"], media["video"], "query")
