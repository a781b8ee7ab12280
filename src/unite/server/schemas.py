"""Request and response bodies (OpenAI-compatible for /v1/embeddings).

Bodies are parsed and validated by :mod:`unite.server.inputs` (never by the framework); these models describe them
in the OpenAPI schema and validate parsed values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "request_body",
]


class EmbeddingRequest(BaseModel):
    """``input``: a string, a list of strings, or multimodal inputs. A multimodal input is a list of content parts
    (``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``,
    ``{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}``), one such part, or an object
    ``{"text": ..., "image": base64, "video": base64}``.

    Quantised embeddings (as sentence-transformers' ``quantize_embeddings``): a precision as ``encoding_format``
    gives one list of integers per input in ``embedding``; ``embedding_types`` (Cohere-style) gives every listed
    type per input in ``embeddings``."""

    input: str | list[Any]
    model: str | None = None
    encoding_format: Literal["float", "base64", "int8", "uint8", "binary", "ubinary"] = Field(
        default="float",
        description="float: list of floats; base64: little-endian float32 bytes; int8 / uint8: D integers; "
        "binary / ubinary: D/8 packed bytes as integers (int8 / uint8)",
    )
    embedding_types: list[Literal["float", "int8", "uint8", "binary", "ubinary"]] | None = Field(
        default=None,
        min_length=1,
        description="answer each listed type in data[i].embeddings (instead of data[i].embedding); "
        "encoding_format must then be float",
    )
    dimensions: int | None = None
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str | None = Field(
        default=None, description="in the encoding_format asked for (absent when embedding_types is given)"
    )
    embeddings: dict[str, list[float] | list[int]] | None = Field(
        default=None, description="one entry per type of embedding_types (absent otherwise)"
    )


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: dict[str, int] = Field(
        default_factory=lambda: {"prompt_tokens": 0, "total_tokens": 0},
        description="tokens of the inputs: text (with instructions) plus visual tokens, counted before decoding",
    )
    quantization: dict[str, str] | None = Field(
        default=None,
        description="present when int8 or uint8 was asked for: {\"ranges\": \"calibration\"} (the server's "
        "--calibration file or its index's) or {\"ranges\": \"unit\"} (the fixed range [-1, 1] per dimension)",
    )


class SearchRequest(BaseModel):
    """The JSON form of /search (a multipart form with the same fields and file uploads also works)."""

    text: str | None = None
    image: str | None = Field(default=None, description="base64 or a base64 data URL")
    video: str | None = Field(default=None, description="base64 or a base64 data URL")
    modality: str | None = Field(default=None, description="text, image, video or a combination like text,image")
    k: int = 10


class SearchHit(BaseModel):
    id: str
    score: float
    modality: str
    path: str = Field(description="relative to the indexed folder (or to the folder of the indexed JSONL file)")
    start: float | None
    end: float | None
    text: str
    metadata: dict[str, Any]
    thumbnail: str | None


class SearchResponse(BaseModel):
    model: str
    results: list[SearchHit]
    took_ms: float


def request_body(model: type[BaseModel], multipart: bool = False) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON (and optionally multipart) request body of ``model``'s shape."""
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema}}
    if multipart:
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}
