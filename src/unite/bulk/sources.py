"""SOURCE arguments: expanded to files, scanned, and read a range of rows at a time.

A SOURCE is a JSON lines file, a Parquet file (suffix ``.parquet``) or a glob of them. A glob expands to the
files it matches, sorted, each named as the glob yields it; a glob that matches no file is an error naming it.
A file given twice (directly or through globs) is refused, so every input line lands in exactly one shard row.

JSON lines files are read by the rules of :mod:`unite.data.jsonl` (bytes split on ``\\n``, each line decoded and
parsed on its own, errors ``FILE:LINE: reason``). Parquet files hold the columns ``text``, ``image``, ``video``,
``instruction`` and ``id`` (any subset, nothing else); each row, its null columns left out, is checked exactly
like a JSON line holding that object, and is named by its 1-based row number. Relative media paths resolve
against the folder of the file as given, as ``unite encode ITEMS.jsonl`` does.

Scanning counts the rows and records, for JSON lines, the byte offset where each run of ``shard_size`` lines
starts, so a shard is read by seeking to its start, never by reading the lines before it (Parquet: only the row
groups that hold the range are read).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unite.data.jsonl import JsonlRecord, count_lines, item_record, read_item_range
from unite.errors import ConfigError, InputError

if TYPE_CHECKING:
    from unite.bulk.plan import ShardSpec

__all__ = ["ITEM_COLUMNS", "JSONL", "PARQUET", "SourceFile", "expand_sources", "read_rows", "scan_sources"]

JSONL = "jsonl"
PARQUET = "parquet"
#: The columns a Parquet source may hold.
ITEM_COLUMNS = ("text", "image", "video", "instruction", "id")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    """One input file, as the manifest records it.

    Attributes:
        source: the file as given (a glob expanded to each file's path as the glob yields it); rows are read
            through it, errors name it and relative media paths resolve against its folder.
        path: the absolute path.
        kind: ``jsonl`` or ``parquet``.
        rows: lines (JSON lines) or rows (Parquet).
        size: bytes.
        mtime_ns: modification time in nanoseconds.
        offsets: JSON lines: the byte offset of lines 1, 1 + shard_size, ...; empty for Parquet.
    """

    source: str
    path: str
    kind: str
    rows: int
    size: int
    mtime_ns: int
    offsets: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the file (without the offsets)."""
        return {
            "source": self.source,
            "path": self.path,
            "kind": self.kind,
            "rows": self.rows,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
        }


def expand_sources(arguments: Sequence[str]) -> list[str]:
    """The files SOURCE arguments name, in order: a file as given, a glob as its sorted matches.

    Raises:
        InputError: a file is missing or is a folder, or a glob matches no file.
        ConfigError: the same file is named twice.
    """
    files: list[str] = []
    for argument in arguments:
        text = str(argument)
        path = Path(text)
        if path.is_dir():
            raise InputError(f"{text}: a folder; give its files or a glob such as {Path(text) / '*.jsonl'}")
        if path.exists() or not _GLOB_CHARACTERS & set(text):
            if not path.exists():
                raise InputError(f"{text}: file not found")
            if not path.is_file():
                raise InputError(f"{text}: not a regular file")
            files.append(text)
            continue
        # glob.glob, not Path.glob: matches are spelt as the pattern spells them (the source column keeps them)
        matches = sorted(match for match in glob.glob(text, recursive=True) if Path(match).is_file())  # noqa: PTH207
        if not matches:
            raise InputError(f"{text}: the glob matches no file")
        files.extend(matches)
    seen: dict[Path, str] = {}
    for text in files:
        real = Path(text).resolve()
        if real in seen:
            raise ConfigError(f"{text}: the same file as {seen[real]}; each file may be given once")
        seen[real] = text
    return files


def scan_sources(arguments: Sequence[str], shard_size: int) -> list[SourceFile]:
    """Expand SOURCE arguments and scan each file (rows, size, mtime, shard offsets).

    Raises:
        InputError: as :func:`expand_sources`, or a file cannot be read (not for a bad line or row).
    """
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    return [_scan(source, shard_size) for source in expand_sources(arguments)]


def read_rows(shard: ShardSpec) -> list[JsonlRecord]:
    """The records of lines (rows) ``shard.first_line`` to ``shard.last_line`` of ``shard.source``, one per line,
    each with its item or its error ``FILE:LINE: reason``; never raises for a line.

    Raises:
        InputError: the file cannot be opened or read at all, or has fewer rows than the shard names.
    """
    if shard.kind == PARQUET:
        records = _read_parquet_rows(shard.source, shard.first_line, shard.last_line)
    else:
        records = read_item_range(shard.source, shard.offset or 0, shard.first_line, shard.rows)
    if len(records) != shard.rows:
        raise InputError(
            f"{shard.source}: expected rows {shard.first_line} to {shard.last_line}, the file ends after "
            f"{shard.first_line + len(records) - 1}; it changed while being read"
        )
    return records


# ------------------------------------------------------------------------------------------------ internals


def _scan(source: str, shard_size: int) -> SourceFile:
    path = Path(source)
    try:
        stat = path.stat()
    except OSError as error:
        raise InputError(f"{source}: cannot read ({error})") from None
    if path.suffix.lower() == ".parquet":
        rows, offsets, kind = _parquet_rows(source), (), PARQUET
    else:
        rows, found = count_lines(path, every=shard_size)
        offsets, kind = tuple(found), JSONL
    return SourceFile(source, str(path.resolve()), kind, rows, stat.st_size, stat.st_mtime_ns, offsets)


def _parquet_file(source: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading .parquet sources needs pyarrow: pip install 'unite-embed[parquet]'") from None
    try:
        return pq.ParquetFile(source)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for a file it cannot read
        raise InputError(f"{source}: cannot read as Parquet ({type(error).__name__}: {error})") from None


def _parquet_rows(source: str) -> int:
    """Rows of a Parquet source, after checking its columns."""
    parquet = _parquet_file(source)
    names = parquet.schema_arrow.names
    unknown = [name for name in names if name not in ITEM_COLUMNS]
    if unknown:
        raise InputError(
            f"{source}: unknown column(s) {', '.join(map(repr, unknown))}; expected {', '.join(ITEM_COLUMNS)}"
        )
    if not set(names) & {"text", "image", "video"}:
        raise InputError(f"{source}: no text, image or video column; expected some of {', '.join(ITEM_COLUMNS)}")
    return parquet.metadata.num_rows


def _read_parquet_rows(source: str, first_line: int, last_line: int) -> list[JsonlRecord]:
    """Rows ``first_line`` to ``last_line`` (1-based), reading only the row groups that hold them."""
    parquet = _parquet_file(source)
    start, stop = first_line - 1, last_line
    groups, group_start, base = [], 0, None
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        if group_start < stop and group_start + count > start:
            groups.append(group)
            base = group_start if base is None else base
        group_start += count
    if not groups:
        return []
    try:
        table = parquet.read_row_groups(groups).slice(start - base, stop - start)
        values = table.to_pylist()
    except Exception as error:  # a damaged page: the whole range is unreadable, so the file is
        raise InputError(f"{source}:{first_line}: cannot read rows ({type(error).__name__}: {error})") from None
    return [
        item_record({key: value for key, value in row.items() if value is not None}, first_line + offset, source)
        for offset, row in enumerate(values)
    ]
