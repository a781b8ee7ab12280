"""``POST /v1/embeddings``: the OpenAI embeddings API, with multimodal inputs and quantised answers.

A precision as ``encoding_format`` (int8, uint8, binary, ubinary) answers ``data[i].embedding`` as integers;
``embedding_types`` (Cohere-style) answers ``data[i].embeddings`` with one entry per type. int8 / uint8 use the
ranges set by :func:`set_calibration` (``unite serve --calibration FILE``, or the index's), else the fixed range
[-1, 1] per dimension, and the answer says which in ``quantization.ranges``.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from unite.quantization import Calibration, quantize_embeddings
from unite.server.errors import RequestError, json_response
from unite.server.inputs import embedding_inputs, parse_json, validate
from unite.server.schemas import EmbeddingRequest, EmbeddingResponse, request_body
from unite.server.state import ServerState
from unite.server.uploads import UploadFolder

__all__ = ["router", "set_calibration"]

logger = logging.getLogger(__name__)

router = APIRouter()

#: Where :func:`set_calibration` keeps the int8 / uint8 ranges on ``app.state``.
_CALIBRATION = "unite_calibration"


def set_calibration(app: Any, calibration: Calibration | None) -> None:
    """Use ``calibration`` (per-dimension ranges) for the int8 / uint8 embeddings ``app`` answers; ``None``: the
    fixed range [-1, 1] per dimension."""
    setattr(app.state, _CALIBRATION, calibration)


@router.post(
    "/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=request_body(EmbeddingRequest), tags=["api"]
)
async def embeddings(request: Request) -> Any:
    """Embed strings, or multimodal inputs made of text, image and video parts (base64 data URLs)."""
    state: ServerState = request.app.state.unite
    calibration = getattr(request.app.state, _CALIBRATION, None)
    body = await request.body()
    return await state.within_time_limit(_embeddings(state, body, calibration))


async def _embeddings(state: ServerState, body: bytes, calibration: Calibration | None = None) -> Any:
    query = validate(EmbeddingRequest, parse_json(body))
    dim = int(state.encoder.embedding_dim)
    if query.dimensions is not None and query.dimensions != dim:
        raise RequestError(400, f"dimensions: this model gives {dim}, got {query.dimensions}")
    if query.embedding_types is not None and query.encoding_format != "float":
        raise RequestError(400, "embedding_types: give embedding_types or a non-float encoding_format, not both")
    parsed = embedding_inputs(query.input, state.config)
    with UploadFolder(state.config, state.encoder.settings) as uploads:
        items = await run_in_threadpool(lambda: [one.to_item(uploads) for one in parsed])
        vectors, usage = await state.embed(items, [one.field for one in parsed], uploads)
    logger.info("embedded %d inputs", len(items))
    return json_response(_answer(query, vectors, usage.total, state.model_name, calibration))


def _answer(
    query: EmbeddingRequest, vectors: np.ndarray, tokens: int, model: str, calibration: Calibration | None
) -> dict[str, Any]:
    """The response body: ``data[i].embedding`` in the one format asked for, or ``data[i].embeddings`` with one
    entry per ``embedding_types`` entry; ``quantization`` when int8 / uint8 ranges were used."""
    types = list(dict.fromkeys(query.embedding_types or [query.encoding_format]))
    ranges = (calibration or Calibration.unit(vectors.shape[1])).ranges
    encoded = {kind: _encode_vectors(vectors, kind, ranges) for kind in types}
    if query.embedding_types is None:
        answers = [{"embedding": value} for value in encoded[types[0]]]
    else:
        answers = [{"embeddings": {kind: encoded[kind][i] for kind in types}} for i in range(len(vectors))]
    data = [{"object": "embedding", "index": i, **answer} for i, answer in enumerate(answers)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    payload = {"object": "list", "data": data, "model": model, "usage": usage}
    if any(kind in ("int8", "uint8") for kind in types):
        payload["quantization"] = {"ranges": "unit" if calibration is None else "calibration"}
    return payload


def _encode_vectors(vectors: np.ndarray, kind: str, ranges: np.ndarray) -> list[Any]:
    """One answer per row: floats, a base64 string of little-endian float32, or the quantised integers."""
    if kind == "base64":
        return [base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode() for vector in vectors]
    if kind == "float":
        return [[float(x) for x in vector] for vector in vectors]
    quantized = quantize_embeddings(np.asarray(vectors, dtype=np.float32), kind, ranges=ranges)
    return quantized.astype(np.int64).tolist()
