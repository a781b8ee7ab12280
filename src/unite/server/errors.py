"""Client-facing errors: one JSON shape for every refusal, ``{"error": {message, type, code[, limit]}}``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RequestError", "error_payload", "json_response", "limit_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "limit_exceeded",
    421: "invalid_host_error",
    422: "limit_exceeded",
    429: "rate_limit_error",
    503: "server_busy",
}


class RequestError(Exception):
    """A refusal: HTTP ``status`` and a message that names the field or limit and the reason.

    Args:
        status: the HTTP status.
        message: shown to the client; never holds a server path or the client's content.
        limit: the name of the limit that was exceeded (a :class:`ServerConfig` field), if any.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self, status: int, message: str, limit: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.limit = limit
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return error_payload(self.status, self.message, self.limit)

    def body(self) -> bytes:
        return json.dumps(self.payload()).encode()


def error_payload(status: int, message: str, limit: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    error: dict[str, Any] = {"message": message, "type": kind, "code": status}
    if limit is not None:
        error["limit"] = limit
    return {"error": error}


def limit_error(field: str, what: str, limit_name: str, limit: float, status: int = 413) -> RequestError:
    """``FIELD: WHAT, more than the limit of N (LIMIT_NAME)``."""
    return RequestError(status, f"{field}: {what}, more than the limit of {limit:g} ({limit_name})", limit=limit_name)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A JSON response rendered with ASCII escapes, so that no string (a lone surrogate included) can fail it."""
    from starlette.responses import Response

    return Response(json.dumps(payload), status_code=status, headers=headers, media_type="application/json")
