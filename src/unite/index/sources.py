"""What gets indexed: a folder walked recursively (images, videos, text files) or a JSONL of items.

Each source becomes :class:`Entry` objects with a stable id and a content hash, so a rebuild re-encodes only what
changed. Long videos may be cut into clips with start and end times.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unite.errors import InputError, MediaError, UniteError
from unite.settings import FRAME_FACTOR, EncodingSettings
from unite.types import VIDEO_EXTENSIONS, Item, Modality, VideoClip

__all__ = ["IMAGE_EXTENSIONS", "TEXT_EXTENSIONS", "Entry", "materialize", "scan_folder", "scan_jsonl", "scan_source"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
TEXT_EXTENSIONS = frozenset({".txt", ".md"})
#: Characters of an item's text kept in the index for display.
TEXT_SNIPPET_CHARS = 500
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing to embed, before encoding.

    Attributes:
        id: unique key (folder: the path relative to the folder; clip: ``path#t=START,END``; JSONL: its ``id``).
        item: the item dict (``text``, ``image``, ``video`` with absolute paths) handed to the encoder.
        source: what the entry came from (a relative path or ``jsonl:ID``); ``--sync`` and clips group by it.
        content_hash: sha256 of the file (and, for JSONL, of the line and its media).
        path: the file shown and thumbnailed ("" for inline text).
        start, end: clip time range in seconds.
    """

    id: str
    item: dict[str, Any]
    modality: int
    source: str
    content_hash: str
    path: str = ""
    start: float | None = None
    end: float | None = None
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def file_hash(path: Path, digest: Any = None) -> str:
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan_source(
    source: str | Path,
    clip_seconds: float | None = None,
    settings: EncodingSettings | None = None,
    skip: Path | None = None,
) -> list[Entry]:
    """Entries of a folder or a ``.jsonl`` file (see :func:`scan_folder`, :func:`scan_jsonl`)."""
    source = Path(source)
    if source.is_dir():
        return scan_folder(source, clip_seconds=clip_seconds, settings=settings, skip=skip)
    if source.is_file() and source.suffix == ".jsonl":
        return scan_jsonl(source)
    if source.exists():
        raise InputError(f"{source}: expected a folder or a .jsonl file of items")
    raise InputError(f"{source}: not found")


def scan_folder(
    root: Path, clip_seconds: float | None = None, settings: EncodingSettings | None = None, skip: Path | None = None
) -> list[Entry]:
    """Walk ``root`` recursively (hidden files and folders, and ``skip``, left out) in a stable order.

    Images and videos are embedded as themselves, ``.txt``/``.md`` files as their text. With ``clip_seconds``,
    videos longer than that are cut into consecutive clips of that length (the last one may be shorter).
    """
    root = root.resolve()
    skip = skip.resolve() if skip is not None else None
    entries: list[Entry] = []
    for path in sorted(_walk(root, skip)):
        relative = path.relative_to(root).as_posix()
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            entries.append(_file_entry(relative, path, {"image": str(path)}, Modality.IMAGE))
        elif suffix in VIDEO_EXTENSIONS:
            entries.extend(_video_entries(relative, path, clip_seconds, settings or EncodingSettings()))
        elif suffix in TEXT_EXTENSIONS:
            entries.append(_text_entry(relative, path))
    return entries


def _walk(root: Path, skip: Path | None) -> Iterator[Path]:
    for path in root.iterdir():
        if path.name.startswith(".") or (skip is not None and path == skip):
            continue
        if path.is_dir():
            yield from _walk(path, skip)
        elif path.is_file():
            yield path


def _file_entry(relative: str, path: Path, item: dict[str, Any], modality: Modality, **extra: Any) -> Entry:
    digest = extra.pop("content_hash", None) or file_hash(path)
    return Entry(relative, item, int(modality), relative, digest, path=str(path), **extra)


def _text_entry(relative: str, path: Path) -> Entry:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        text = ""
        reason = str(error)
    else:
        reason = "empty text file"
    if not text:  # kept as an entry so that the build reports it instead of silently skipping it
        return _file_entry(relative, path, {"error": f"{path}: {reason}"}, Modality.TEXT)
    return _file_entry(relative, path, {"text": text}, Modality.TEXT, text=text[:TEXT_SNIPPET_CHARS])


def _video_entries(relative: str, path: Path, clip_seconds: float | None, settings: EncodingSettings) -> list[Entry]:
    whole = _file_entry(relative, path, {"video": str(path)}, Modality.VIDEO)
    if not clip_seconds:
        return [whole]
    from unite.data.media import _video_info

    try:
        info = _video_info(str(path), settings)
    except MediaError:
        return [whole]  # the build reports the error when it encodes the whole file
    duration = info.frames / info.fps
    if duration <= clip_seconds:
        return [whole]
    entries = []
    for index in range(math.ceil(duration / clip_seconds - 1e-9)):
        start, end = index * clip_seconds, min((index + 1) * clip_seconds, duration)
        if end - start < FRAME_FACTOR / info.fps:  # a tail too short to sample two frames from
            continue
        clip = {"video": str(path), "start": round(start, 3), "end": round(end, 3)}
        clip_id = f"{relative}#t={start:g},{end:g}"
        entries.append(
            Entry(
                clip_id, clip, int(Modality.VIDEO), relative, whole.content_hash, str(path), clip["start"], clip["end"]
            )
        )
    return entries


def scan_jsonl(path: Path) -> list[Entry]:
    """Lines ``{"id": ..., "text"/"image"/"video": ..., "metadata": {...}}``; media paths relative to the file.

    Raises:
        InputError: naming ``FILE:LINE``: invalid JSON, missing or repeated id, bad item, missing media file.
    """
    path = path.resolve()
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = _jsonl_entry(line, path.parent)
        except UniteError as error:
            raise InputError(f"{path}:{number}: {error}") from None
        if entry.id in seen:
            raise InputError(f"{path}:{number}: id {entry.id!r} already used on line {seen[entry.id]}")
        seen[entry.id] = number
        entries.append(entry)
    return entries


def _jsonl_entry(line: str, base_dir: Path) -> Entry:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}")
    record_id, metadata = data.pop("id", None), data.pop("metadata", {})
    if not isinstance(record_id, (str, int)) or isinstance(record_id, bool) or str(record_id) == "":
        raise InputError(f"field 'id' must be a non-empty string or integer, got {record_id!r}")
    if not isinstance(metadata, dict):
        raise InputError(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    item = Item.from_dict(data, base_dir)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    resolved: dict[str, Any] = {key: data[key] for key in ("text", "instruction") if key in data}
    media_paths: list[str] = []
    for key, sources in (("image", item.images), ("video", item.videos)):
        values = []
        for source in sources:
            for file in source if isinstance(source, list) else [source]:
                file_path = Path(str(file))
                if not file_path.is_file():
                    raise InputError(f"{key} file {file_path} not found")
                file_hash(file_path, digest)
                media_paths.append(str(file_path))
            values.append([str(f) for f in source] if isinstance(source, list) else str(source))
        if values:
            resolved[key] = values[0] if len(values) == 1 else values
    text = item.plain_text.strip()
    return Entry(
        str(record_id),
        resolved,
        int(item.modality),
        f"jsonl:{record_id}",
        digest.hexdigest(),
        path=media_paths[0] if media_paths else "",
        text=text[:TEXT_SNIPPET_CHARS],
        metadata=metadata,
    )


def materialize(entry: Entry, settings: EncodingSettings) -> dict[str, Any]:
    """The item the encoder gets: the entry's item, or for a clip a :class:`unite.types.VideoClip` of its range.

    A clip goes through the video-file pipeline (frames sampled like a whole file's, within the range).

    Raises:
        InputError: the entry was recorded as unreadable while scanning.
    """
    if "error" in entry.item:
        raise InputError(entry.item["error"])
    if entry.start is None:
        return entry.item
    return {"video": VideoClip(entry.path, entry.start, entry.end)}
