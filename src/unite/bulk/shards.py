"""One shard: ``part-NNNNN.parquet``, written whole or not at all, with one exact schema.

Columns, in this order: ``source`` (string, the input file as given), ``line`` (int64, the 1-based line or row),
``id`` (string, null when the item has none; an integer id as its decimal string), ``ok`` (bool), ``embedding``
(list<float32>, L2-normalised; an EMPTY list when not ok), ``error`` (string ``FILE:LINE: reason``, null when ok).
Rows are in line order.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from unite.errors import ConfigError, UniteError

if TYPE_CHECKING:
    from unite.bulk.folder import OutputFolder
    from unite.bulk.plan import ShardSpec

__all__ = ["COLUMNS", "ShardRows", "WrittenShard", "read_shard", "shard_schema", "shard_table", "write_shard"]

COLUMNS = ("source", "line", "id", "ok", "embedding", "error")


@dataclass
class ShardRows:
    """The rows of one shard, in line order, before they are written.

    Attributes:
        lines: (N,) 1-based lines (rows) of the source.
        ids: (N,) the items' ids as strings, None where an item has none.
        embeddings: (N, D) float32; rows that failed are ignored (written as empty lists).
        ok: (N,) bool.
        errors: (N,) the error of each failed row (message ``FILE:LINE: reason``), None where ok.
    """

    lines: list[int]
    ids: list[str | None]
    embeddings: np.ndarray
    ok: np.ndarray
    errors: list[UniteError | None] = field(default_factory=list)

    @classmethod
    def empty(cls, lines: list[int], ids: list[str | None], dim: int) -> ShardRows:
        """Rows to fill: zero embeddings, none ok, no errors yet."""
        count = len(lines)
        return cls(lines, ids, np.zeros((count, dim), np.float32), np.zeros(count, bool), [None] * count)

    @property
    def failed(self) -> int:
        return int(len(self.lines) - self.ok.sum())

    def first_error(self) -> UniteError | None:
        """The error of the first failed row in line order."""
        return next((error for error in self.errors if error is not None), None)


@dataclass(frozen=True)
class WrittenShard:
    """What the manifest records of a written shard."""

    rows: int
    ok: int
    failed: int
    sha256: str


def shard_schema() -> Any:
    """The pyarrow schema of every shard."""
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("line", pa.int64()),
            ("id", pa.string()),
            ("ok", pa.bool_()),
            ("embedding", pa.list_(pa.float32())),
            ("error", pa.string()),
        ]
    )


def shard_table(spec: ShardSpec, rows: ShardRows) -> Any:
    """The rows as a pyarrow table of :func:`shard_schema`.

    Raises:
        ValueError: rows and shard disagree (an engine's bug, never a user's input).
    """
    import pyarrow as pa

    ok = np.asarray(rows.ok, dtype=bool)
    if rows.lines != list(range(spec.first_line, spec.last_line + 1)):
        raise ValueError(f"{spec.name}: rows are not lines {spec.first_line} to {spec.last_line} in order")
    if any((error is None) != bool(flag) for error, flag in zip(rows.errors, ok)) or len(rows.errors) != len(ok):
        raise ValueError(f"{spec.name}: every failed row needs an error and no embedded row may have one")
    vectors = np.ascontiguousarray(np.asarray(rows.embeddings, dtype=np.float32)[ok])
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    offsets = np.zeros(len(ok) + 1, dtype=np.int32)
    np.cumsum(ok.astype(np.int32) * dim, out=offsets[1:])
    embedding = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors.reshape(-1), type=pa.float32()))
    columns = [
        pa.array([spec.source] * len(ok), type=pa.string()),
        pa.array(rows.lines, type=pa.int64()),
        pa.array(rows.ids, type=pa.string()),
        pa.array(ok, type=pa.bool_()),
        embedding,
        pa.array([None if error is None else str(error) for error in rows.errors], type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=shard_schema())


def write_shard(folder: OutputFolder, spec: ShardSpec, rows: ShardRows) -> WrittenShard:
    """Write the shard atomically; returns its counts and the sha256 of the file as written."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("sharded output needs pyarrow: pip install 'unite-embed[parquet]'") from None
    buffer = io.BytesIO()
    pq.write_table(shard_table(spec, rows), buffer)
    data = buffer.getvalue()
    folder.write_atomically(spec.name, data)
    ok = int(np.asarray(rows.ok, dtype=bool).sum())
    return WrittenShard(len(rows.lines), ok, len(rows.lines) - ok, hashlib.sha256(data).hexdigest())


def read_shard(folder: OutputFolder, name: str) -> Any:
    """A shard back as a pyarrow table."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(folder.read_bytes(name)))
