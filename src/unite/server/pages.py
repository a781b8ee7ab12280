"""``GET /`` (the search page) and ``GET /healthz`` (what is served, and whether it can be)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from unite.server.errors import json_response
from unite.server.state import ServerState

__all__ = ["STATIC", "router"]

STATIC = resources.files("unite.server") / "static"

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/healthz", tags=["status"])
async def healthz(request: Request) -> Any:
    """Status (200 ``ok``, or 503 ``unavailable`` with the problem), model, index version and item count."""
    state: ServerState = request.app.state.unite
    payload: dict[str, Any] = {"status": "ok", "model": state.model_name, "items": 0, "version": None}
    if state.index is not None:
        payload.update(await state.index.status())
    payload.update(
        dim=int(state.encoder.embedding_dim),
        auth=state.config.api_key is not None,
        batched={"requests": state.batcher.requests, "batches": state.batcher.batches},
        queue={"waiting": state.batcher.waiting, "limit": state.config.max_queue},
    )
    return json_response(payload, status=200 if payload["status"] == "ok" else 503)
