"""What gets indexed: a folder walked recursively (images, videos, text files) or a JSONL of items.

Each source becomes :class:`Entry` objects with a stable id and a content hash, so a rebuild re-encodes only what
changed. Long videos may be cut into clips with start and end times.

A folder walk is confined: it takes only files whose real path lies inside the real path of the folder, visits
each real file and folder once (links to an ancestor and other loops end), and counts what it leaves out
(:class:`Skipped`). Entries keep their file as ``path`` relative to ``root``, never as an absolute path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from unite.data.jsonl import read_json_lines
from unite.errors import ConfigError, InputError, MediaError, UniteError
from unite.index.store import is_inside
from unite.settings import FRAME_FACTOR, EncodingSettings
from unite.types import VIDEO_EXTENSIONS, Item, Modality, VideoClip, check_unicode

__all__ = [
    "IMAGE_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "Entry",
    "Scan",
    "Skipped",
    "check_item_id",
    "check_source",
    "item_entry",
    "locate",
    "materialize",
    "scan_folder",
    "scan_jsonl",
    "scan_source",
]

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
        source: what the entry came from (a relative path, ``jsonl:ID``, or ``parquet:ID`` for a row of a Parquet
            source of embedding shards); ``--sync`` and clips group by it.
        content_hash: sha256 of the file (and, for JSONL, of the line and its media).
        path: the file shown and thumbnailed, relative to ``root`` in POSIX form ("" for inline text).
        start, end: clip time range in seconds.
        root: the absolute real folder ``path`` is relative to (see :func:`locate`).
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
    root: str = ""


@dataclass
class Skipped:
    """What a folder walk left out (hidden names are left out silently).

    Attributes:
        outside: relative paths of links whose real path lies outside the folder (to files or folders).
        unreadable: relative paths of folders that could not be listed (their entries are kept by ``--sync``).
        repeated: paths to a real file or folder already walked (a second link to it, a link to an ancestor).
        broken: links to nothing.
        invalid: ``(FILE:LINE, reason)`` of JSONL lines that cannot be used (reported as failed by the build).
        kept: sources (``jsonl:ID``) of such lines whose id could be read: their records stay in the index.
    """

    outside: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    repeated: int = 0
    broken: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)


class Scan(list[Entry]):
    """The entries of a source, with what its walk left out (nothing for a JSONL file)."""

    def __init__(self, entries: Iterable[Entry] = (), skipped: Skipped | None = None) -> None:
        super().__init__(entries)
        self.skipped = skipped or Skipped()


def locate(file: str, base: str) -> tuple[str, str]:
    """Where a record keeps ``file``: ``(root, path)`` with ``path`` relative to ``root``, never absolute.

    A file whose real path lies inside ``base`` (a real absolute folder) is ``(base, relative POSIX path)``; any
    other file is ``(its real folder, its name)``, so that clients only ever see a file name for it.
    """
    if not file:
        return base, ""
    real = Path(os.path.realpath(file))
    if is_inside(real, base):
        return base, real.relative_to(base).as_posix()
    return str(real.parent), real.name


def file_hash(path: Path, digest: Any = None) -> str:
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_source(source: str | Path) -> Path:
    """``source`` when it is a folder or a ``.jsonl`` file.

    Raises:
        InputError: it does not exist, or is something else.
    """
    source = Path(source)
    if source.is_dir() or (source.is_file() and source.suffix == ".jsonl"):
        return source
    if source.exists():
        raise InputError(f"{source}: expected a folder or a .jsonl file of items")
    raise InputError(f"{source}: not found")


def scan_source(
    source: str | Path,
    clip_seconds: float | None = None,
    settings: EncodingSettings | None = None,
    skip: Path | None = None,
    on_error: str = "raise",
) -> Scan:
    """Entries of a folder or a ``.jsonl`` file (see :func:`scan_folder`, :func:`scan_jsonl`).

    JSONL entries keep their media relative to the file's folder (see :func:`locate`); ``on_error`` is the policy
    for its bad lines.
    """
    source = check_source(source)
    if source.is_dir():
        return scan_folder(source, clip_seconds=clip_seconds, settings=settings, skip=skip)
    base = os.path.realpath(source.parent)
    scan = scan_jsonl(source, on_error=on_error)
    located = (replace(entry, **dict(zip(("root", "path"), locate(entry.path, base)))) for entry in scan)
    return Scan(located, scan.skipped)


def scan_folder(
    root: str | Path,
    clip_seconds: float | None = None,
    settings: EncodingSettings | None = None,
    skip: Path | None = None,
) -> Scan:
    """Walk ``root`` recursively, confined to it (hidden files and folders, and ``skip``, left out).

    Only files whose real path lies inside the real path of ``root`` are taken: links pointing outside are
    skipped and counted. Each real file and folder is taken once, under the first path that reaches it in the
    walk (depth first, names sorted): a second link to it, or a link to an ancestor, is skipped and counted.
    Folders that cannot be listed are skipped and counted. Ids and ``path`` are relative to ``root``.

    Images and videos are embedded as themselves, ``.txt``/``.md`` files as their text. With ``clip_seconds``,
    videos longer than that are cut into consecutive clips of that length (the last one may be shorter).

    Raises:
        InputError: ``root`` itself cannot be listed.
    """
    real_root = Path(os.path.realpath(root))
    skipped = Skipped()
    try:
        names = sorted(entry.name for entry in os.scandir(real_root))
    except OSError as error:
        raise InputError(f"{root}: cannot list the folder ({error.strerror or error})") from None
    skip_real = Path(os.path.realpath(skip)) if skip is not None else None
    entries = Scan(skipped=skipped)
    root_name = str(real_root)
    for relative, real in _walk(real_root, names, skip_real, skipped):
        suffix = Path(relative).suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            entries.append(_file_entry(relative, root_name, real, {"image": str(real)}, Modality.IMAGE))
        elif suffix in VIDEO_EXTENSIONS:
            entries.extend(_video_entries(relative, root_name, real, clip_seconds, settings or EncodingSettings()))
        elif suffix in TEXT_EXTENSIONS:
            entries.append(_text_entry(relative, root_name, real))
    return entries


def _walk(root: Path, names: list[str], skip: Path | None, skipped: Skipped) -> Iterator[tuple[str, Path]]:
    """``(relative POSIX path, real path)`` of each real file once, depth first with names sorted.

    Folders are listed by their real path and remembered by it, so loops end; a stack of listings instead of
    recursion keeps deep trees within Python's limits.
    """
    seen = {root}
    stack = [("", root, iter(names))]
    while stack:
        parent, folder, pending = stack[-1]
        name = next(pending, None)
        if name is None:
            stack.pop()
            continue
        if name.startswith("."):
            continue
        relative = f"{parent}/{name}" if parent else name
        real = _admit(folder / name, relative, root, skip, seen, skipped)
        if real is None:
            continue
        if real.is_file():
            yield relative, real
            continue
        try:
            listing = sorted(entry.name for entry in os.scandir(real))
        except OSError:
            skipped.unreadable.append(relative)
            continue
        stack.append((relative, real, iter(listing)))


def _admit(path: Path, relative: str, root: Path, skip: Path | None, seen: set[Path], skipped: Skipped) -> Path | None:
    """The real path of a walked file or folder, or None (counted in ``skipped``) when it is not to be taken."""
    real = Path(os.path.realpath(path))  # not Path.resolve: it raises on a link loop before Python 3.13
    if not real.exists():
        skipped.broken += path.is_symlink()
        return None
    if not is_inside(real, root):
        skipped.outside.append(relative)
        return None
    if (skip is not None and is_inside(real, skip)) or not (real.is_file() or real.is_dir()):
        return None  # the index folder itself; sockets, pipes and devices are never read
    if real in seen:
        skipped.repeated += 1
        return None
    seen.add(real)
    return real


def _file_entry(relative: str, root: str, real: Path, item: dict[str, Any], modality: Modality, **extra: Any) -> Entry:
    """An entry of a walked file; one that cannot be read is kept with its error, for the build to report."""
    try:
        digest = extra.pop("content_hash", None) or file_hash(real)
    except OSError as error:
        item, digest, extra = {"error": f"{relative}: cannot read ({error.strerror or error})"}, "", {}
    return Entry(relative, item, int(modality), relative, digest, path=relative, root=root, **extra)


def _text_entry(relative: str, root: str, real: Path) -> Entry:
    try:
        text = real.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        text = ""
        reason = str(error)
    else:
        reason = "empty text file"
    if not text:  # kept as an entry so that the build reports it instead of silently skipping it
        return _file_entry(relative, root, real, {"error": f"{relative}: {reason}"}, Modality.TEXT)
    return _file_entry(relative, root, real, {"text": text}, Modality.TEXT, text=text[:TEXT_SNIPPET_CHARS])


def _video_entries(
    relative: str, root: str, real: Path, clip_seconds: float | None, settings: EncodingSettings
) -> list[Entry]:
    whole = _file_entry(relative, root, real, {"video": str(real)}, Modality.VIDEO)
    if not clip_seconds or "error" in whole.item:
        return [whole]
    from unite.data.media import _video_info

    try:
        info = _video_info(str(real), settings)
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
        clip = {"video": str(real), "start": round(start, 3), "end": round(end, 3)}
        clip_id = f"{relative}#t={start:g},{end:g}"
        entries.append(
            Entry(
                clip_id,
                clip,
                int(Modality.VIDEO),
                relative,
                whole.content_hash,
                relative,
                clip["start"],
                clip["end"],
                root=root,
            )
        )
    return entries


def scan_jsonl(path: Path, on_error: str = "raise") -> Scan:
    """Lines ``{"id": ..., "text"/"image"/"video": ..., "metadata": {...}}``; media paths relative to the file.

    Args:
        path: the JSONL file.
        on_error: ``raise`` stops at the first bad line; ``skip`` leaves it out, listing it in
            ``Scan.skipped.invalid`` (and, when its id could be read, its source in ``skipped.kept``, so that the
            record it had stays in the index).

    Raises:
        InputError: naming ``FILE:LINE``: invalid JSON, missing or repeated id, bad item, missing media file.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = path.resolve()
    scan = Scan()
    seen: dict[str, int] = {}
    for line in read_json_lines(path):  # the guarded reader: bytes per line, BOM stripped, FILE:LINE errors
        if line.blank:
            continue
        try:
            entry = _jsonl_line(line, path, seen)
        except InputError as error:
            if on_error == "raise":
                raise
            reason = str(error).removeprefix(f"{path}:{line.number}: ")  # the report names NAME:LINE already
            scan.skipped.invalid.append((f"{path.name}:{line.number}", reason))
            record_id = line.value.get("id") if isinstance(line.value, dict) else None
            if isinstance(record_id, (str, int)) and not isinstance(record_id, bool) and str(record_id) not in seen:
                scan.skipped.kept.add(f"jsonl:{record_id}")
            continue
        seen[entry.id] = line.number
        scan.append(entry)
    return scan


def _jsonl_line(line: Any, path: Path, seen: dict[str, int]) -> Entry:
    """The entry of one parsed line, or an InputError naming ``FILE:LINE``."""
    if line.error is not None:
        raise line.error
    number = line.number
    try:
        entry = _jsonl_entry(line.value, path.parent)
    except UniteError as error:
        raise InputError(f"{path}:{number}: {error}") from None
    except Exception as error:  # the last guard of this edge: a line fails by its number, never unnamed
        raise InputError(f"{path}:{number}: internal error: {type(error).__name__}: {error}") from None
    if entry.id in seen:
        raise InputError(f"{path}:{number}: id {entry.id!r} already used on line {seen[entry.id]}")
    return entry


def _jsonl_entry(data: Any, base_dir: Path) -> Entry:
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    record_id, metadata = data.pop("id", None), data.pop("metadata", {})
    return item_entry(data, base_dir, check_item_id(record_id), metadata)


def check_item_id(record_id: Any) -> str:
    """An item's ``id`` as the index keys it: a non-empty string (valid UTF-8) or an integer, as a string.

    Raises:
        InputError: naming what arrived instead.
    """
    if not isinstance(record_id, (str, int)) or isinstance(record_id, bool) or str(record_id) == "":
        raise InputError(f"field 'id' must be a non-empty string or integer, got {record_id!r}")
    if isinstance(record_id, str):
        check_unicode(record_id, "field 'id'")
    return str(record_id)


def item_entry(data: dict[str, Any], base_dir: Path, record_id: str, metadata: Any, source: str | None = None) -> Entry:
    """The entry of one item ``{"text", "image", "video", "instruction"}`` (its id and metadata set apart).

    The content hash is the sha256 of the item as JSON with sorted keys, followed by the bytes of each of its
    media files in order, so an edit of the item or of any of its files changes it. ``path`` is the first media
    file (absolute; :func:`locate` makes it relative), ``source`` defaults to ``jsonl:ID``.

    Raises:
        InputError: a bad item, metadata that is not an object, a missing media file.
    """
    if not isinstance(metadata, dict):
        raise InputError(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("field 'metadata' holds a string with a lone surrogate; expected UTF-8 text") from None
    item = Item.from_dict(data, base_dir)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    resolved: dict[str, Any] = {key: data[key] for key in ("text", "instruction") if key in data}
    media_paths: list[str] = []
    for key, sources in (("image", item.images), ("video", item.videos)):
        values = []
        for media in sources:
            for file in media if isinstance(media, list) else [media]:
                file_path = Path(str(file))
                if not file_path.is_file():
                    raise InputError(f"{key} file {file_path} not found")
                file_hash(file_path, digest)
                media_paths.append(str(file_path))
            values.append([str(f) for f in media] if isinstance(media, list) else str(media))
        if values:
            resolved[key] = values[0] if len(values) == 1 else values
    text = item.plain_text.strip()
    return Entry(
        record_id,
        resolved,
        int(item.modality),
        source or f"jsonl:{record_id}",
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
    return {"video": VideoClip(entry.item["video"], entry.start, entry.end)}
