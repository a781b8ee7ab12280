"""Thumbnails of indexed items only: looked up by id in the index, never by a path from the client.

The cache is keyed by what the picture is made of (the content hash the index recorded, the file's size and
modification time, the clip's range), not by id, so a file that changed or vanished is never served stale.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from unite.errors import MediaError
from unite.settings import EncodingSettings

__all__ = ["THUMBNAIL_SIZE", "ThumbnailCache", "make_thumbnail", "thumbnail_key"]

#: Longest side of a thumbnail in pixels.
THUMBNAIL_SIZE = 320


def thumbnail_key(hit: Any, path: Path) -> tuple | None:
    """What a thumbnail depends on, or ``None`` when the file is gone."""
    try:
        status = path.stat()
    except OSError:
        return None
    return (hit.content_hash, str(path), status.st_size, status.st_mtime_ns, hit.start, hit.end)


def make_thumbnail(hit: Any, path: Path, settings: EncodingSettings, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG of an image item, or of a video's poster frame (the middle of the clip's time range).

    Raises:
        MediaError: the file is unreadable, or the item has no picture (text).
    """
    from PIL import Image

    if "image" in hit.modality:
        from unite.data.media import _to_rgb_pil

        image = _to_rgb_pil(str(path), settings)
    elif "video" in hit.modality:
        from unite.data.media import _decode_frames, _video_info

        info = _video_info(str(path), settings)
        start = hit.start or 0.0
        end = hit.end if hit.end is not None else info.frames / info.fps
        index = max(0, min(int((start + end) / 2 * info.fps), info.frames - 1))
        image = Image.fromarray(_decode_frames(str(path), settings, [index])[0])
    else:
        raise MediaError("text items have no thumbnail")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class ThumbnailCache:
    """A small least-recently-used cache of thumbnail bytes by :func:`thumbnail_key`."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: Any, data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
