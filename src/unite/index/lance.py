"""LanceDB backend: one on-disk table holding vectors, modality and metadata; every write is an atomic commit.

Every commit makes a new table version. A reader keeps the version it opened until :meth:`LanceStore.refresh`;
builds remove versions older than ``CLEANUP_OLDER_THAN`` (the grace period), so a reader that refreshes at least
that often never loses its files, and one that does not is moved to the latest version when its files are gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from unite.errors import ConfigError
from unite.index.store import Hit, IndexManifest, Record, VectorStore, _check_vector, check_modality, modality_name

__all__ = ["ANN_NPROBES", "ANN_REFINE_FACTOR", "CLEANUP_OLDER_THAN", "LanceStore", "ann_partitions"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = "items"
#: The approximate index is IVF_SQ: sqrt(rows) IVF partitions, vectors scalar-quantised to 8 bits. A query probes
#: ANN_NPROBES partitions and re-ranks ANN_REFINE_FACTOR * k candidates with the full vectors. Measured in
#: benchmarks/search_bench.py (100k x 1536 on 2 CPU cores: built in about 40 s, recall@10 1.0 against exact search,
#: 0.97 without re-ranking; IVF_PQ with 96 sub-vectors took about 5x longer to build and reached 0.23 before
#: re-ranking).
ANN_NPROBES = 20
ANN_REFINE_FACTOR = 10
#: The grace period: a build removes only table versions older than this, so a reader holding a version committed
#: less than this long ago keeps its files.
CLEANUP_OLDER_THAN = timedelta(minutes=10)
_COLUMNS = ["id", "modality", "source", "content_hash", "path", "start", "end", "text", "metadata", "root"]
#: What LanceDB reports when a version's data files were removed under a reader.
_VANISHED = "Not found"


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError:
        raise ConfigError("the LanceDB index needs lancedb: pip install 'unite-embed[index]'") from None
    return lancedb


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceStore(VectorStore):
    """The default backend: ``DIR/items.lance``, readable while a build writes to it."""

    def __init__(self, folder: Path, manifest: IndexManifest) -> None:
        import pyarrow as pa

        self.manifest = manifest
        self.folder = Path(folder)
        self._db = _lancedb().connect(str(self.folder))
        self._schema = pa.schema(
            [
                ("id", pa.string()),
                ("vector", pa.list_(pa.float32(), manifest.dim)),
                ("modality", pa.int8()),
                ("source", pa.string()),
                ("content_hash", pa.string()),
                ("path", pa.string()),
                ("start", pa.float64()),
                ("end", pa.float64()),
                ("text", pa.string()),
                ("metadata", pa.string()),
                ("root", pa.string()),
            ]
        )
        if TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(TABLE)
        else:
            self._table = self._db.create_table(TABLE, schema=self._schema, exist_ok=True)
        self._columns = self._readable_columns()

    def _readable_columns(self) -> list[str]:
        """The record columns this table has (tables written before format 2 have no ``root``)."""
        names = set(self._table.schema.names)
        return [name for name in _COLUMNS if name in names]

    def _read(self, read: Callable[[], T]) -> T:
        """Run a read; when the version it sees was cleaned up by a build, move to the latest and read again."""
        try:
            return read()
        except (RuntimeError, OSError, ValueError) as error:  # LanceDB's error for files removed under a reader
            if _VANISHED not in str(error):
                raise
            logger.info("index version %s was cleaned up by a build; reading the latest", self._table.version)
            self.refresh()
            return read()

    def _arrow(self, records: Sequence[Record]) -> Any:
        import pyarrow as pa

        dim = self.manifest.dim
        vectors = np.stack([_check_vector(record.vector, dim) for record in records]).astype(np.float32)
        columns = {
            "id": [r.id for r in records],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            "modality": pa.array([r.modality for r in records], pa.int8()),
            "source": [r.source for r in records],
            "content_hash": [r.content_hash for r in records],
            "path": [r.path for r in records],
            "start": pa.array([r.start for r in records], pa.float64()),
            "end": pa.array([r.end for r in records], pa.float64()),
            "text": [r.text for r in records],
            "metadata": [json.dumps(r.metadata, ensure_ascii=False) for r in records],
            "root": [r.root for r in records],
        }
        return pa.table(columns, schema=self._schema)

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if "root" not in self._columns:  # an index built before format 2: add the column (empty: legacy rows)
            self._table.add_columns({"root": "CAST('' AS STRING)"})
            self._columns = self._readable_columns()
        data = self._arrow(records)
        if self._table.count_rows() == 0:
            self._table.add(data)
            return
        builder = self._table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
        builder.execute(data)

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self._table.delete(f"id IN ({', '.join(_quote(i) for i in chunk)})")

    def content_hashes(self) -> dict[str, tuple[str, str]]:
        table = self._read(lambda: self._table.search().select(["id", "source", "content_hash"]).limit(None).to_arrow())
        return {
            i: (s, h)
            for i, s, h in zip(table["id"].to_pylist(), table["source"].to_pylist(), table["content_hash"].to_pylist())
        }

    def get(self, record_id: str) -> Hit | None:
        where = f"id = {_quote(record_id)}"
        rows = self._read(lambda: self._table.search().where(where).select(self._columns).limit(1).to_list())
        return _hit(rows[0], 0.0) if rows else None

    def search(self, vector: np.ndarray, k: int = 10, modality: int | None = None, exact: bool = False) -> list[Hit]:
        vector = _check_vector(vector, self.manifest.dim)
        modality = check_modality(modality)

        def run() -> list[dict[str, Any]]:
            query = self._table.search(vector, vector_column_name="vector").metric("cosine").limit(k)
            query = query.select([*self._columns, "_distance"])
            if modality is not None:
                query = query.where(f"modality = {modality}", prefilter=True)
            if exact:
                return query.bypass_vector_index().to_list()
            return query.nprobes(ANN_NPROBES).refine_factor(ANN_REFINE_FACTOR).to_list()

        return [_hit(row, 1.0 - float(row["_distance"])) for row in self._read(run)]

    def count(self) -> int:
        return int(self._read(self._table.count_rows))

    def refresh(self) -> bool:
        """Move reads to the latest committed version (a look at the table's version list when nothing changed)."""
        before = self._table.version
        try:
            self._table.checkout_latest()
        except (RuntimeError, OSError, ValueError):  # the table was replaced (its folder removed and rebuilt)
            self._table = self._db.open_table(TABLE)
        self._columns = self._readable_columns()
        return self._table.version != before

    def version(self) -> int:
        return int(self._table.version)

    def stats(self) -> dict[str, Any]:
        table = self._read(lambda: self._table.search().select(["modality"]).limit(None).to_arrow())
        bits, counts = np.unique(np.asarray(table["modality"].to_numpy(), dtype=np.int64), return_counts=True)
        items = {modality_name(int(b)): int(c) for b, c in zip(bits, counts)}
        size = sum(file.stat().st_size for file in (self.folder / f"{TABLE}.lance").rglob("*") if file.is_file())
        return {"items": items, "total": int(counts.sum()), "bytes": size, "version": self.version()}

    def has_ann_index(self) -> bool:
        return any(index.index_type.upper().startswith("IVF") for index in self._table.list_indices())

    def optimize(self) -> bool:
        """Compact the many small commits of a build, then build or refresh the ANN and scalar indexes."""
        self._table.optimize(cleanup_older_than=CLEANUP_OLDER_THAN)
        rows = self.count()
        if rows < self.manifest.ann_threshold:
            return False
        if not self.has_ann_index():
            from lancedb.index import Bitmap, IvfSq

            logger.info("building the approximate index over %d rows", rows)
            config = IvfSq(distance_type="cosine", num_partitions=ann_partitions(rows))
            self._table.create_index("vector", config=config, replace=True)
            self._table.create_index("modality", config=Bitmap(), replace=True)
        return True


def ann_partitions(rows: int) -> int:
    """IVF partitions for a table of ``rows``: sqrt(rows), at least 16 (about 300 rows each at 100k)."""
    return max(16, int(rows**0.5))


def _hit(row: dict[str, Any], score: float) -> Hit:
    return Hit(
        id=row["id"],
        score=score,
        modality=modality_name(int(row["modality"])),
        path=row["path"] or "",
        start=row["start"],
        end=row["end"],
        text=row["text"] or "",
        metadata=json.loads(row["metadata"] or "{}"),
        content_hash=row.get("content_hash") or "",
        root=row.get("root") or "",
    )
