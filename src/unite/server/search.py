"""``POST /search`` (JSON or a multipart form with uploads) and ``GET /thumbnail?id=ID``."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from unite.errors import UniteError
from unite.server.config import ServerConfig
from unite.server.errors import RequestError, json_response
from unite.server.inputs import check_text, make_item, parse_json, validate
from unite.server.schemas import SearchRequest, SearchResponse, request_body
from unite.server.state import ServerState
from unite.server.thumbnails import make_thumbnail, thumbnail_key
from unite.server.uploads import UploadFolder
from unite.types import Item, Modality

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter()
#: Longest id looked up by /thumbnail; ids are paths relative to the indexed folder or JSONL ids.
MAX_ID_CHARS = 4096


@router.post(
    "/search", response_model=SearchResponse, openapi_extra=request_body(SearchRequest, multipart=True), tags=["api"]
)
async def search(request: Request) -> Any:
    """Search the index with text, an image, a video or a mix; ``modality`` keeps one kind of result."""
    state: ServerState = request.app.state.unite
    if state.index is None:
        raise RequestError(404, "this server has no index")
    return await state.within_time_limit(_search(state, request))


async def _search(state: ServerState, request: Request) -> Any:
    started = time.perf_counter()
    config = state.config
    with UploadFolder(config, state.encoder.settings) as uploads:
        query, uploaded = await _search_query(request, uploads)
        modality = _modality(query.modality)
        if not 1 <= query.k <= config.max_k:
            raise RequestError(400, f"k: must lie in [1, {config.max_k}], got {query.k}")
        item = await run_in_threadpool(_search_item, query, uploaded, uploads, config)
        vectors, _ = await state.embed([item], ["query"], uploads)
    store = state.index.store
    hits = await state.index.call(lambda: store.search(vectors[0], k=query.k, modality=modality))
    took = (time.perf_counter() - started) * 1000
    logger.info("search k=%d modality=%s: %d hits in %.1f ms", query.k, modality, len(hits), took)
    results = [dict(hit.to_dict(), thumbnail=_thumbnail_url(hit)) for hit in hits]
    return json_response({"model": state.model_name, "results": results, "took_ms": round(took, 2)})


@router.get("/thumbnail", tags=["api"], response_class=Response)
async def thumbnail(request: Request, id: str) -> Response:  # noqa: A002 (the query parameter is called id)
    """A JPEG of an indexed image, or a video's poster frame; 404 for anything else."""
    state: ServerState = request.app.state.unite
    if state.index is None:
        raise RequestError(404, "this server has no index")
    if not id or len(id) > MAX_ID_CHARS or not id.isprintable():
        raise RequestError(404, "no indexed item has this id")
    hit = await state.index.call(state.index.store.get, id)
    if hit is None:
        raise RequestError(404, "no indexed item has this id")
    if "image" not in hit.modality and "video" not in hit.modality:
        raise RequestError(404, "text items have no thumbnail")
    data = await run_in_threadpool(_thumbnail, state, hit)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


def _thumbnail(state: ServerState, hit: Any) -> bytes:
    gone = RequestError(404, "the indexed file can no longer be read")
    path = hit.local_file()
    key = thumbnail_key(hit, path) if path is not None else None
    if key is None:
        raise gone
    data = state.thumbnails.get(key)
    if data is None:
        try:
            data = make_thumbnail(hit, path, state.encoder.settings)
        except UniteError:
            raise gone from None
        state.thumbnails.put(key, data)
    return data


async def _search_query(request: Request, uploads: UploadFolder) -> tuple[SearchRequest, dict[str, str]]:
    """The query of /search from JSON or from a multipart form (whose files are saved as uploads)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _form_query(request, uploads)
    return validate(SearchRequest, parse_json(await request.body())), {}


async def _form_query(request: Request, uploads: UploadFolder) -> tuple[SearchRequest, dict[str, str]]:
    try:
        form = await request.form(max_files=2, max_fields=8)
    except Exception as error:  # malformed multipart bodies raise several kinds of errors
        raise RequestError(400, f"the multipart form cannot be read ({type(error).__name__})") from None
    body: dict[str, Any] = {}
    uploaded: dict[str, str] = {}
    try:
        for key in ("text", "modality", "k", "image", "video"):
            value = form.get(key)
            if isinstance(value, UploadFile):
                if key not in ("image", "video"):
                    raise RequestError(400, f"{key}: expected a form field, got a file")
                data = await value.read()
                if data:
                    uploaded[key] = await run_in_threadpool(uploads.save, data, key, key)
            elif value not in (None, ""):
                body[key] = value
    finally:
        await form.close()
    return validate(SearchRequest, body), uploaded


def _modality(value: str | None) -> int | None:
    if value in (None, "", "all", "any"):
        return None
    try:
        return int(Modality.parse(value))
    except UniteError as error:
        raise RequestError(400, f"modality: {_without_field(str(error), 'modality')}") from None


def _without_field(message: str, field: str) -> str:
    """``unknown modality 'x'`` -> ``unknown value 'x'``: the field is already named in front."""
    return message.replace(f" {field} ", " value ", 1)


def _search_item(query: SearchRequest, uploaded: dict[str, str], uploads: UploadFolder, config: ServerConfig) -> Item:
    text = check_text(query.text, "text", config) if query.text is not None else None
    media: dict[str, list[str]] = {"image": [], "video": []}
    for key in media:
        if key in uploaded:
            media[key].append(uploaded[key])
        elif getattr(query, key):
            media[key].append(uploads.media(getattr(query, key), key, key))
    if not (text and text.strip()) and not media["image"] and not media["video"]:
        raise RequestError(400, "give a query: text, image or video (or a mix)")
    return make_item(text or None, media["image"], media["video"], "query")


def _thumbnail_url(hit: Any) -> str | None:
    return None if hit.modality == "text" else f"/thumbnail?id={quote(hit.id, safe='')}"
