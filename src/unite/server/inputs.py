"""Request bodies to items: the one guarded path every client input goes through.

Bodies are parsed here (never by the framework, whose JSON parser answers 500 to deeply nested input), every
value is type-checked before it is used, media parts are counted before any of them is decoded, and every
failure is a :class:`RequestError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from unite.errors import UniteError
from unite.server.config import ServerConfig
from unite.server.errors import RequestError, limit_error
from unite.server.uploads import UploadFolder
from unite.types import Item

__all__ = ["MAX_JSON_DEPTH", "ParsedInput", "embedding_inputs", "parse_json", "validate"]

#: Deepest JSON nesting accepted in a request body.
MAX_JSON_DEPTH = 32
_PART_KINDS = {"text": "text", "image_url": "image", "video_url": "video", "image": "image", "video": "video"}
_TOKEN_IDS_HINT = (
    "input: token ids are not accepted, send the texts themselves (LangChain's OpenAIEmbeddings sends token ids "
    "by default: pass check_embedding_ctx_length=False)"
)


@dataclass
class ParsedInput:
    """One input before its media are decoded: the field name, its texts and its media parts in order."""

    field: str
    texts: list[str]
    media: list[tuple[str, Any, str]]  # (kind, value, field of the part)

    def to_item(self, uploads: UploadFolder) -> Item:
        images = [uploads.media(value, kind, where) for kind, value, where in self.media if kind == "image"]
        videos = [uploads.media(value, kind, where) for kind, value, where in self.media if kind == "video"]
        return make_item("\n".join(self.texts) if self.texts else None, images, videos, self.field)


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body.

    Raises:
        RequestError: 400 when the body is not UTF-8, not JSON, or nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"the body is not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise RequestError(400, f"the body is not valid JSON ({getattr(error, 'msg', error)})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise RequestError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def validate(model: type[BaseModel], data: Any) -> Any:
    """``model`` from a parsed body, or a 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise RequestError(400, f"expected a JSON object, got {_kind(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise RequestError(400, f"{where or 'body'}: {first.get('msg', 'invalid value')}") from None


def embedding_inputs(value: Any, config: ServerConfig) -> list[ParsedInput]:
    """The ``input`` of /v1/embeddings as parsed inputs, counted against the item and media limits."""
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list):
        raise RequestError(400, f"input: expected a string or a list, got {_kind(value)}")
    if not inputs:
        raise RequestError(400, "input: empty list")
    if _is_token_ids(inputs):
        raise RequestError(400, _TOKEN_IDS_HINT)
    if len(inputs) > config.max_items:
        raise limit_error("input", f"{len(inputs)} inputs", "max_items", config.max_items)
    parsed = [_parse_input(one, f"input[{i}]", config) for i, one in enumerate(inputs)]
    check_media_counts(parsed, config)
    return parsed


def check_media_counts(parsed: list[ParsedInput], config: ServerConfig) -> None:
    total = 0
    for one in parsed:
        if len(one.media) > config.max_media_per_input:
            raise limit_error(one.field, f"{len(one.media)} images and videos", "max_media_per_input",
                              config.max_media_per_input)
        total += len(one.media)
        if total > config.max_media_per_request:
            raise limit_error("input", f"{total} images and videos", "max_media_per_request",
                              config.max_media_per_request)


def _is_token_ids(inputs: list[Any]) -> bool:
    def ints(values: Any) -> bool:
        return isinstance(values, list) and bool(values) and all(isinstance(v, int) for v in values)

    return ints(inputs) or all(ints(one) for one in inputs)


def _parse_input(value: Any, field: str, config: ServerConfig) -> ParsedInput:
    """A string, a content part, a list of content parts, or ``{"text", "image", "video"}``."""
    if isinstance(value, str):
        return ParsedInput(field, [check_text(value, field, config)], [])
    if isinstance(value, dict) and "type" not in value:
        unknown = sorted(str(key) for key in value if key not in ("text", "image", "video"))
        if unknown:
            raise RequestError(400, f"{field}: unknown key(s) {', '.join(unknown)}; expected text, image, video")
        parts = [{"type": key, key: value[key]} for key in ("text", "image", "video") if value.get(key) is not None]
        wheres = [f"{field}.{part['type']}" for part in parts]
    elif isinstance(value, dict):
        parts, wheres = [value], [field]
    elif isinstance(value, list) and value:
        parts, wheres = value, [f"{field}[{number}]" for number in range(len(value))]
    else:
        raise RequestError(400, f"{field}: expected a string, a content part or a non-empty list of content parts")
    parsed = ParsedInput(field, [], [])
    for part, where in zip(parts, wheres):
        kind, payload = _part(part, where)
        if kind == "text":
            parsed.texts.append(check_text(payload, where, config))
        else:
            parsed.media.append((kind, payload.get("url") if isinstance(payload, dict) else payload, where))
    return parsed


def _part(part: Any, where: str) -> tuple[str, Any]:
    if not isinstance(part, dict):
        raise RequestError(400, f"{where}: expected a content part {{\"type\": ...}}, got {_kind(part)}")
    name = part.get("type")
    kind = _PART_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        shown = repr(name) if isinstance(name, str) and len(name) < 40 else _kind(name)
        raise RequestError(400, f"{where}: unknown part type {shown}; expected text, image_url or video_url")
    return kind, part.get(name)


def check_text(text: Any, field: str, config: ServerConfig) -> str:
    if not isinstance(text, str):
        raise RequestError(400, f"{field}: expected a string, got {_kind(text)}")
    if len(text) > config.max_text_chars:
        raise limit_error(field, f"{len(text)} characters", "max_text_chars", config.max_text_chars)
    return text


def make_item(text: str | None, images: list[str], videos: list[str], field: str) -> Item:
    try:
        return Item(text=text, images=tuple(images), videos=tuple(videos))
    except UniteError as error:
        raise RequestError(400, f"{field}: {error}") from None
    except Exception as error:  # any other refusal of a client value is still the client's, with a 400
        raise RequestError(400, f"{field}: cannot be used ({type(error).__name__})") from None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
