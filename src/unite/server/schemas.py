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
    ``{"text": ..., "image": base64, "video": base64}``."""

    input: str | list[Any]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: dict[str, int] = Field(
        default_factory=lambda: {"prompt_tokens": 0, "total_tokens": 0},
        description="tokens of the inputs: text (with instructions) plus visual tokens, counted before decoding",
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
