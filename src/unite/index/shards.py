"""Embedding shards (``unite encode ... --output OUT_DIR/``) as index entries, without the model.

``OUT_DIR`` (a local folder or a storage URI, :mod:`unite.index.storage`) holds ``part-NNNNN.parquet`` shards with
the columns ``source, line, id, ok, embedding, error`` and ``_manifest.json``: the model, its weights fingerprint,
the encoding settings, an optional instruction, the embedding size, the sources (``source`` as given, absolute
``path``, ``kind`` jsonl or parquet, ``size``, ``mtime_ns``) and the shards (``name``, ``source``, ``rows``,
``sha256``, ``complete``).

:func:`read_shards` reads the manifest and refuses incomplete shards; :func:`scan_shards` checks every shard's
sha256, re-reads each source (JSONL through the guarded reader, Parquet with pyarrow) and turns each ok row into
the :class:`~unite.index.sources.Entry` a direct build of that line makes: the same id, content hash, modality,
text and metadata, its media relative to the source's folder. A row without an id gets ``NAME:LINE`` (the
source's file name and the row's 1-based line, or row for Parquet). The vectors stay in the shards until
:class:`ShardVectors` reads those of the entries an index lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from unite.bulk.manifest import FORMAT, MANIFEST
from unite.data.jsonl import read_json_lines
from unite.errors import ConfigError, InputError, UniteError
from unite.index import storage
from unite.index.sources import Entry, Scan, check_item_id, item_entry, locate
from unite.index.storage import Location
from unite.settings import EncodingSettings

__all__ = [
    "SHARD_COLUMNS",
    "SHARD_FORMAT",
    "SHARD_MANIFEST",
    "Shard",
    "ShardScan",
    "ShardSource",
    "ShardVectors",
    "Shards",
    "read_shards",
    "scan_shards",
]

#: The manifest file and the shard layout this module reads: those ``unite encode`` writes.
SHARD_MANIFEST = MANIFEST
SHARD_FORMAT = FORMAT
SHARD_COLUMNS = ("source", "line", "id", "ok", "embedding", "error")
#: The item keys a Parquet source may hold besides ``id`` and ``metadata``.
_ITEM_COLUMNS = ("text", "image", "video", "instruction")
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class ShardSource:
    """An input file of the shards: ``source`` as given to ``unite encode``, its absolute ``path``, its ``kind``
    (jsonl or parquet), and its ``size`` and ``mtime_ns`` when it was encoded (``None``: not recorded)."""

    source: str
    path: str
    kind: str
    size: int | None = None
    mtime_ns: int | None = None

    @property
    def name(self) -> str:
        """The file name, which ids of rows without an id start with (``NAME:LINE``)."""
        return PurePath(self.source).name


@dataclass(frozen=True)
class Shard:
    """One ``part-NNNNN.parquet``: its rows of ``source`` and the sha256 of the file."""

    name: str
    source: str
    first_line: int
    rows: int
    complete: bool
    sha256: str | None


@dataclass(frozen=True)
class Shards:
    """What ``_manifest.json`` says; ``settings`` is ``EncodingSettings.to_dict()``."""

    location: Location
    model: str
    model_fingerprint: str | None
    settings: dict[str, Any]
    instruction: str | None
    dim: int
    sources: dict[str, ShardSource]
    shards: tuple[Shard, ...]


def read_shards(location: Location) -> Shards:
    """Read ``OUT_DIR/_manifest.json``.

    Raises:
        ConfigError: no manifest, a malformed one (naming the field), a newer format, or incomplete shards
            (naming them: finish them with the same ``unite encode`` command).
    """
    where = storage.join(location, SHARD_MANIFEST)
    try:
        data = json.loads(storage.read_bytes(location, SHARD_MANIFEST))
    except FileNotFoundError:
        raise ConfigError(
            f"{location}: not a folder of embedding shards (no {SHARD_MANIFEST}); make one with "
            "`unite encode ITEMS --output OUT_DIR/`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: cannot read the shard manifest ({error})") from None
    shards = _parse_manifest(data, location, where)
    incomplete = [shard.name for shard in shards.shards if not shard.complete]
    if incomplete:
        raise ConfigError(
            f"{location}: {len(incomplete)} incomplete shard(s): {', '.join(incomplete)}; finish them by running "
            "the same `unite encode` command again"
        )
    return shards


def _parse_manifest(data: Any, location: Location, where: Location) -> Shards:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    if data.get("format") != SHARD_FORMAT:
        raise ConfigError(f"{where}: field 'format' is {data.get('format')!r}; this unite-embed reads {SHARD_FORMAT}")
    for key, kind in (("model", str), ("settings", dict), ("dim", int), ("sources", list), ("shards", list)):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ConfigError(f"{where}: field '{key}' must be a {kind.__name__}, got {data.get(key)!r}")
    for key in ("model_fingerprint", "instruction"):
        if not isinstance(data.get(key), (str, type(None))):
            raise ConfigError(f"{where}: field '{key}' must be a string or null, got {data.get(key)!r}")
    if data["dim"] < 1:
        raise ConfigError(f"{where}: field 'dim' must be positive, got {data['dim']}")
    try:
        settings = EncodingSettings.from_dict(data["settings"]).to_dict()
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: field 'settings': {error}") from None
    sources = [_source(value, where, index) for index, value in enumerate(data["sources"])]
    shards = tuple(_shard(value, where, index) for index, value in enumerate(data["shards"]))
    known = {source.source: source for source in sources}
    for shard in shards:
        if shard.source not in known:
            raise ConfigError(f"{where}: shard {shard.name} is of source {shard.source!r}, which 'sources' lacks")
    return Shards(
        location=location,
        model=data["model"],
        model_fingerprint=data.get("model_fingerprint"),
        settings=settings,
        instruction=data.get("instruction"),
        dim=data["dim"],
        sources=known,
        shards=shards,
    )


def _fields(value: Any, where: Location, name: str, required: dict[str, type]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} must be an object, got {type(value).__name__}")
    for key, kind in required.items():
        if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool) is not (kind is bool):
            raise ConfigError(f"{where}: {name} field '{key}' must be a {kind.__name__}, got {value.get(key)!r}")
    return value


def _source(value: Any, where: Location, index: int) -> ShardSource:
    value = _fields(value, where, f"sources[{index}]", {"source": str, "path": str, "kind": str})
    if value["kind"] not in ("jsonl", "parquet"):
        raise ConfigError(f"{where}: sources[{index}] field 'kind' must be jsonl or parquet, got {value['kind']!r}")
    stamps = {key: value.get(key) for key in ("size", "mtime_ns")}
    for key, stamp in stamps.items():
        if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
            raise ConfigError(f"{where}: sources[{index}] field '{key}' must be an integer, got {stamp!r}")
    return ShardSource(value["source"], value["path"], value["kind"], **stamps)


def _shard(value: Any, where: Location, index: int) -> Shard:
    required = {"name": str, "source": str, "first_line": int, "rows": int, "complete": bool}
    value = _fields(value, where, f"shards[{index}]", required)
    if PurePath(value["name"]).name != value["name"] or value["name"] in ("", ".", ".."):
        raise ConfigError(f"{where}: shards[{index}] field 'name' must be a file name, got {value['name']!r}")
    if value["complete"]:  # a shard not yet written has no sha256
        _fields(value, where, f"shards[{index}]", {"sha256": str})
    return Shard(**{key: value[key] for key in required}, sha256=value.get("sha256"))


class ShardScan(Scan):
    """The entries of the shards' ok rows (a :class:`Scan`: rows that failed are in ``skipped.invalid``), and
    where each entry's vector lies: ``positions[id] = (shard index, row in the shard)``."""

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[str, tuple[int, int]] = {}


def scan_shards(shards: Shards, on_error: str = "skip") -> ShardScan:
    """The entries a direct build of the shards' sources makes, for the rows the shards embedded.

    Every shard's sha256 is checked against the manifest. A row that failed in the shards, or whose source line
    cannot be made an entry now (a media file gone, an id used before), is listed in ``skipped.invalid`` as
    ``(NAME:LINE, reason)``; with an id, its source goes to ``skipped.kept`` so its old record stays. With
    ``on_error="raise"`` the first such row raises instead.

    Raises:
        ConfigError: a shard is missing, its sha256 differs from the manifest's, its columns are not the shard
            columns, or a source changed (size or modification time) since it was encoded.
        InputError: ``on_error="raise"`` and a row cannot be used (``NAME:LINE: reason``).
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    scan = ShardScan()
    seen: dict[str, str] = {}
    for source in shards.sources.values():
        numbered = sorted(
            (shard.first_line, index) for index, shard in enumerate(shards.shards) if shard.source == source.source
        )
        if not numbered:
            continue
        reader = _SourceReader(source)
        for _, index in numbered:
            rows = enumerate(_shard_rows(shards, shards.shards[index]))
            for position, row in sorted(rows, key=lambda numbered_row: numbered_row[1].line):
                where = f"{source.name}:{row.line}"
                try:
                    entry = _row_entry(row, reader, source, shards.instruction, seen)
                except InputError as error:
                    if on_error == "raise":
                        raise InputError(f"{where}: {error}") from None
                    scan.skipped.invalid.append((where, str(error)))
                    if row.id is not None and row.id not in seen:
                        scan.skipped.kept.add(_record_source(source, row.id))
                    continue
                seen[entry.id] = where
                scan.append(entry)
                scan.positions[entry.id] = (index, position)
    return scan


@dataclass(frozen=True)
class _Row:
    line: int
    id: str | None
    ok: bool
    error: str | None


def _shard_rows(shards: Shards, shard: Shard) -> list[_Row]:
    """The rows of ``shard`` in file order; ok rows whose embedding is not ``dim`` finite values become failed."""
    table = _read_shard(shards, shard)
    lengths = np.diff(_offsets(table.column("embedding")))
    finite = _finite_rows(table.column("embedding"), lengths)
    rows = []
    for line, record_id, ok, error, length, is_finite in zip(
        table.column("line").to_pylist(),
        table.column("id").to_pylist(),
        table.column("ok").to_pylist(),
        table.column("error").to_pylist(),
        lengths.tolist(),
        finite.tolist(),
    ):
        if ok and length != shards.dim:
            ok, error = False, f"the shard's embedding has {length} values, the manifest says dim {shards.dim}"
        elif ok and not is_finite:
            ok, error = False, "the shard's embedding holds NaN or infinite values"
        rows.append(_Row(int(line), record_id, bool(ok), None if ok else (error or "not embedded")))
    return rows


def _read_shard(shards: Shards, shard: Shard) -> Any:
    """The shard's table, after checking its bytes against the manifest's sha256 and its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = storage.join(shards.location, shard.name)
    try:
        data = storage.read_bytes(shards.location, shard.name)
    except FileNotFoundError:
        raise ConfigError(f"{where}: the shard the manifest lists is missing") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the shard ({error})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard.sha256:
        raise ConfigError(
            f"{where}: sha256 {digest[:12]} differs from the manifest's {str(shard.sha256)[:12]} (the shard changed "
            "after it was written); run the `unite encode` command again to rewrite it"
        )
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise ConfigError(f"{where}: not a readable Parquet file ({error})") from None
    missing = [name for name in SHARD_COLUMNS if name not in table.column_names]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(SHARD_COLUMNS)}")
    if any(table.column(name).null_count for name in ("source", "line", "ok")):
        raise ConfigError(f"{where}: the columns source, line and ok hold nulls")
    if table.num_rows != shard.rows or set(table.column("source").to_pylist()) - {shard.source}:
        raise ConfigError(f"{where}: expected {shard.rows} rows of {shard.source!r} as the manifest says")
    return table


def _offsets(column: Any) -> np.ndarray:
    """(rows + 1,) offsets of a list column's values (null lists are empty)."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _values(column: Any) -> np.ndarray:
    """All values of a list<float> column, concatenated, as float32."""
    import pyarrow as pa

    chunks = [chunk.flatten() for chunk in column.chunks] if isinstance(column, pa.ChunkedArray) else [column.flatten()]
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(chunk.to_numpy(zero_copy_only=False), np.float32) for chunk in chunks])


def _finite_rows(column: Any, lengths: np.ndarray) -> np.ndarray:
    values = _values(column)
    bad = ~np.isfinite(values)
    if not bad.any():
        return np.ones(len(lengths), dtype=bool)
    owners = np.repeat(np.arange(len(lengths)), lengths)
    finite = np.ones(len(lengths), dtype=bool)
    finite[owners[bad]] = False
    return finite


class _SourceReader:
    """The lines (JSONL) or rows (Parquet) of one source, read forward once; a step back reopens the file."""

    def __init__(self, source: ShardSource) -> None:
        self.source = source
        self.path = _local_source(source)
        self._check_unchanged()
        self._lines: Iterator[tuple[int, Any]] = iter(())
        self._last = 0

    def _check_unchanged(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as error:
            raise ConfigError(f"{self.path}: cannot read the source the shards were made from ({error})") from None
        stamps = (("size", self.source.size, stat.st_size), ("mtime_ns", self.source.mtime_ns, stat.st_mtime_ns))
        changed = [
            f"{name} {recorded} then, {now} now"
            for name, recorded, now in stamps
            if recorded is not None and recorded != now
        ]
        if changed:
            raise ConfigError(
                f"{self.path}: the source changed since it was encoded ({'; '.join(changed)}); encode it again"
            )

    def value(self, number: int) -> Any:
        """The parsed value of line (or row) ``number``.

        Raises:
            InputError: the line is not JSON (or not UTF-8), or the file has fewer lines.
        """
        if number <= self._last:
            self._lines, self._last = iter(()), 0
        if self._last == 0:
            self._lines = self._jsonl() if self.source.kind == "jsonl" else self._parquet()
        for current, value in self._lines:
            self._last = current
            if current == number:
                if isinstance(value, InputError):
                    raise InputError(str(value).removeprefix(f"{self.path}:{number}: "))
                return value
        self._last = 0
        raise InputError(f"{self.path.name} has no line {number}")

    def _jsonl(self) -> Iterator[tuple[int, Any]]:
        for line in read_json_lines(self.path):
            yield line.number, line.error if line.error is not None else line.value

    def _parquet(self) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
            names = [name for name in ("id", "metadata", *_ITEM_COLUMNS) if name in parquet.schema_arrow.names]
            number = 0
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=names):
                for row in batch.to_pylist():
                    number += 1
                    yield number, {key: value for key, value in row.items() if value is not None}
        except (pa.ArrowException, OSError) as error:
            raise ConfigError(f"{self.path}: cannot read the Parquet source ({error})") from None


def _local_source(source: ShardSource) -> Path:
    """The source file on this machine (a path, or a ``file:`` URI).

    Raises:
        ConfigError: the source lies on object storage (its media would have to be read from there too).
    """
    local = storage.local_path(source.path)
    if local is None:
        raise ConfigError(f"{source.path}: sources are re-read from local files; copy it here and encode it again")
    return Path(os.path.realpath(local))


def _row_entry(
    row: _Row, reader: _SourceReader, source: ShardSource, instruction: str | None, seen: dict[str, str]
) -> Entry:
    """The entry of an ok row, as a direct build of its line makes it.

    Raises:
        InputError: the row failed in the shards, its line cannot be made an entry, or its id was used before.
    """
    if not row.ok:  # the encoder's reason names FILE:LINE as given; the report names NAME:LINE already
        raise InputError((row.error or "not embedded").removeprefix(f"{source.source}:{row.line}: "))
    value = reader.value(row.line)
    if isinstance(value, str):  # a JSON string line: a text item
        data, record_id, metadata = {"text": value}, None, {}
    elif isinstance(value, dict):
        data = dict(value)
        record_id, metadata = data.pop("id", None), data.pop("metadata", {})
    else:
        raise InputError(f"expected a JSON object or string, got {type(value).__name__}")
    key = f"{source.name}:{row.line}" if record_id is None else check_item_id(record_id)
    if row.id != (None if record_id is None else key):
        raise InputError(
            f"the shard's id {row.id!r} is not the line's {None if record_id is None else key!r} (the source "
            "changed since it was encoded)"
        )
    if key in seen:
        raise InputError(f"id {key!r} already used on {seen[key]}")
    if instruction is not None:  # what was encoded: the item with the run's instruction
        data["instruction"] = instruction
    try:
        entry = item_entry(data, reader.path.parent, key, metadata, source=_record_source(source, key))
    except UniteError as error:
        raise InputError(str(error)) from None
    root, path = locate(entry.path, str(reader.path.parent))
    return replace(entry, root=root, path=path)


def _record_source(source: ShardSource, record_id: str) -> str:
    """What a record of this item groups by: ``jsonl:ID`` as direct builds of a JSONL write, ``parquet:ID``."""
    return f"{source.kind}:{record_id}"


class ShardVectors:
    """Entries -> their vectors, read from the shards (each shard read once while entries come in shard order)."""

    def __init__(self, shards: Shards, positions: dict[str, tuple[int, int]]) -> None:
        self.shards = shards
        self.positions = positions
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None  # shard index, offsets, values

    def __call__(self, entries: list[Entry]) -> np.ndarray:
        """(N, D) float32: row i is the shard's embedding of ``entries[i]``, exactly as stored."""
        rows = np.empty((len(entries), self.shards.dim), dtype=np.float32)
        for number, entry in enumerate(entries):
            index, position = self.positions[entry.id]
            offsets, values = self._shard(index)
            rows[number] = values[offsets[position] : offsets[position + 1]]
        return rows

    def _shard(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != index:
            column = _read_shard(self.shards, self.shards.shards[index]).column("embedding")
            self._cached = (index, _offsets(column), _values(column))
        return self._cached[1], self._cached[2]
