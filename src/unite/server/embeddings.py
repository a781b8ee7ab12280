"""``POST /v1/embeddings``: the OpenAI embeddings API, with multimodal inputs."""

from __future__ import annotations

import base64
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from unite.server.errors import RequestError, json_response
from unite.server.inputs import embedding_inputs, parse_json, validate
from unite.server.schemas import EmbeddingRequest, EmbeddingResponse, request_body
from unite.server.state import ServerState
from unite.server.uploads import UploadFolder

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter()


@router.post(
    "/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=request_body(EmbeddingRequest), tags=["api"]
)
async def embeddings(request: Request) -> Any:
    """Embed strings, or multimodal inputs made of text, image and video parts (base64 data URLs)."""
    state: ServerState = request.app.state.unite
    body = await request.body()
    return await state.within_time_limit(_embeddings(state, body))


async def _embeddings(state: ServerState, body: bytes) -> Any:
    query = validate(EmbeddingRequest, parse_json(body))
    dim = int(state.encoder.embedding_dim)
    if query.dimensions is not None and query.dimensions != dim:
        raise RequestError(400, f"dimensions: this model gives {dim}, got {query.dimensions}")
    parsed = embedding_inputs(query.input, state.config)
    with UploadFolder(state.config, state.encoder.settings) as uploads:
        items = await run_in_threadpool(lambda: [one.to_item(uploads) for one in parsed])
        vectors, usage = await state.embed(items, [one.field for one in parsed], uploads)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(vector, query.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    logger.info("embedded %d inputs", len(items))
    usage_payload = {"prompt_tokens": usage.total, "total_tokens": usage.total}
    return json_response({"object": "list", "data": data, "model": state.model_name, "usage": usage_payload})


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]
