"""Turning what a remote client sends into items, without ever reading a server path or fetching a URL
unless the server was started to allow it. Uploaded bytes go to a private temporary folder per request."""

from __future__ import annotations

import base64
import binascii
import shutil
import tempfile
from pathlib import Path
from typing import Any

from unite.errors import MediaError
from unite.server.config import ServerConfig
from unite.server.errors import RequestError, limit_error
from unite.settings import EncodingSettings

__all__ = ["RequestError", "UploadFolder"]


class UploadFolder:
    """Holds one request's uploads in a private temporary folder, removed on exit."""

    def __init__(self, config: ServerConfig, settings: EncodingSettings) -> None:
        self.config = config
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="unite-upload-"))
        self.names: dict[str, str] = {}

    def __enter__(self) -> UploadFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def save(self, data: bytes, kind: str, field: str) -> str:
        """Write uploaded bytes; check a video's length. Returns the temporary path."""
        if not data:
            raise RequestError(400, f"{field}: the upload is empty")
        path = self.folder / f"{kind}-{len(self.names)}.upload"
        path.write_bytes(data)
        self.names[str(path)] = field
        if kind == "video":
            self._check_video(str(path), field)
        return str(path)

    def _check_video(self, path: str, field: str) -> None:
        from unite.data.media import _video_info

        try:
            info = _video_info(path, self.settings)
        except MediaError as error:
            raise RequestError(400, self.scrub(str(error))) from None
        seconds = info.frames / info.fps
        if seconds > self.config.max_video_seconds:
            raise limit_error(
                field, f"the video lasts {seconds:.1f} s", "max_video_seconds", self.config.max_video_seconds
            )

    def media(self, value: Any, kind: str, field: str) -> str:
        """A data URL or base64 string -> a temporary file; a URL or path only when the server allows it."""
        if not isinstance(value, str) or not value.strip():
            raise RequestError(400, f"{field}: expected a base64 data URL (data:{kind}/...;base64,...)")
        value = value.strip()
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            if not header.endswith(";base64"):
                raise RequestError(400, f"{field}: only base64 data URLs are accepted (data:{kind}/...;base64,...)")
            return self.save(_b64decode(payload, field), kind, field)
        if value.startswith(("http://", "https://")) or "://" in value[:16]:
            if self.config.allow_urls:
                return value
            raise RequestError(
                400,
                f"{field}: URLs are refused; this server fetches nothing for clients (start it with --allow-urls "
                "to change that); send the file itself as base64",
            )
        if self.config.allow_server_paths and not _looks_like_base64(value):
            if not Path(value).is_file():
                raise RequestError(400, f"{field}: no such file on the server")
            return value
        if not _looks_like_base64(value):
            raise RequestError(
                400,
                f"{field}: expected base64 or a base64 data URL; server-side paths are refused (start the server "
                "with --allow-server-paths to change that)",
            )
        return self.save(_b64decode(value, field), kind, field)

    def scrub(self, message: str) -> str:
        """Replace temporary paths in an error message with the request field they came from."""
        for path, name in self.names.items():
            message = message.replace(path, name)
        return message.replace(str(self.folder), "upload")

    def explain(self, field: str, message: str) -> str:
        """``FIELD: reason`` for an error about ``field``, naming the field once: a message that already starts
        with it or with one of its parts (``input[0][1]: ...`` for ``input[0]``) is kept as it is."""
        message = self.scrub(message)
        head = message.split(": ", 1)[0]
        return message if head.startswith(field) else f"{field}: {message}"


def _looks_like_base64(value: str) -> bool:
    compact = "".join(value.split())
    if len(compact) % 4 or not compact:
        return False
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _b64decode(payload: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{field}: invalid base64") from None
