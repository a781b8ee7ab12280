"""LanceDB backend: one on-disk table holding vectors, modality and metadata; every write is an atomic commit.

An index with ``vector_precision`` int8 or binary also holds the column ``vector_q`` (int8 codes, or the packed
bits as uint8) and searches in two stages: ``rescore_factor * k`` candidates by the codes, in numpy over a
per-version copy of the column (int8: dot products of the codes, N x D bytes in memory; binary: the float32 query
against the sign bits, ``q . (2 * bits - 1)``, N x D / 8 bytes), then the float32 vectors of those candidates rank
them by cosine similarity (:mod:`unite.index.quantized`).

Every commit makes a new table version. A reader keeps the version it opened until :meth:`LanceStore.refresh`;
builds remove versions older than ``CLEANUP_OLDER_THAN`` (the grace period), so a reader that refreshes at least
that often never loses its files, and one that does not is moved to the latest version when its files are gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from unite.errors import ConfigError
from unite.index import storage
from unite.index.quantized import asymmetric_candidates, byte_columns, cosine_rescore, int8_candidates
from unite.index.storage import Location
from unite.index.store import (
    Hit,
    IndexManifest,
    Record,
    VectorStore,
    _check_vector,
    check_modality,
    modality_name,
    read_manifest,
)
from unite.quantization import Calibration, Precision, quantize_embeddings

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
#: The first-stage column of int8 / binary indexes.
QUANTIZED_COLUMN = "vector_q"


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

    def __init__(self, folder: Location, manifest: IndexManifest) -> None:
        import pyarrow as pa

        self.manifest = manifest
        self.folder = folder if storage.is_uri(folder) else Path(folder)
        self._db = _lancedb().connect(str(self.folder))  # a path, or a URI LanceDB opens itself
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
        self._codes: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # version, row ids, modality, codes
        self._ranges: Calibration | None = None
        if manifest.vector_precision != "float32":
            precision = Precision.INT8 if manifest.vector_precision == "int8" else Precision.UBINARY
            item = pa.int8() if precision is Precision.INT8 else pa.uint8()
            column = pa.field(QUANTIZED_COLUMN, pa.list_(item, precision.width(manifest.dim)))
            self._schema = self._schema.append(column)
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
        if self.manifest.vector_precision != "float32":
            codes = self._quantize(vectors)
            columns[QUANTIZED_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), codes.shape[1])
        return pa.table(columns, schema=self._schema)

    def _quantize(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) float32 -> int8 codes with the index's ranges, or packed bits (ubinary, uint8)."""
        if self.manifest.vector_precision == "binary":
            return quantize_embeddings(vectors, Precision.UBINARY)
        return quantize_embeddings(vectors, Precision.INT8, ranges=self._int8_ranges().ranges)

    def _int8_ranges(self) -> Calibration:
        """The int8 ranges: the recorded ones, else [-1, 1] per dimension, which the codes use until the first build
        records the corpus's."""
        return self._recorded_ranges() or Calibration.unit(self.manifest.dim)

    def _recorded_ranges(self) -> Calibration | None:
        """The manifest's int8 ranges (re-read while unset: a build may have recorded them since this store
        opened), or None."""
        if self._ranges is None:
            recorded = self.manifest.calibration or read_manifest(self.folder).calibration
            if recorded is None:
                return None
            self._ranges = Calibration.from_dict(recorded, f"{self.folder}: manifest field 'calibration'")
            self.manifest = replace(self.manifest, calibration=recorded)
        return self._ranges

    def _calibrate(self, batch_rows: int = 8192) -> None:
        """Record the min and max per dimension of every stored vector as the int8 ranges, and rewrite the codes
        with them (once: at the end of the first build of an int8 index given no ranges)."""
        import pyarrow as pa

        minimum = np.full(self.manifest.dim, np.inf, np.float32)
        maximum = np.full(self.manifest.dim, -np.inf, np.float32)
        rows = 0
        for batch in self._vector_batches(batch_rows):
            vectors = _vectors(batch)
            if not len(vectors):
                continue
            minimum, maximum = np.minimum(minimum, vectors.min(axis=0)), np.maximum(maximum, vectors.max(axis=0))
            rows += len(vectors)
        if rows < 2:
            return
        self._ranges = Calibration(minimum, maximum, "int8")
        for batch in self._vector_batches(batch_rows):
            codes = quantize_embeddings(_vectors(batch), Precision.INT8, ranges=self._ranges.ranges)
            column = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), codes.shape[1])
            update = pa.table({"id": batch.column("id"), QUANTIZED_COLUMN: column})
            self._table.merge_insert("id").when_matched_update_all().execute(update)
        self.manifest = replace(self.manifest, calibration=self._ranges.to_dict())
        self.manifest.write(self.folder)

    def _vector_batches(self, batch_rows: int) -> Any:
        """Record batches of the columns id and vector, ``batch_rows`` at a time."""
        return self._table.search().select(["id", "vector"]).limit(None).to_batches(batch_rows)

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
        if self.manifest.vector_precision != "float32" and not exact:
            return self._read(lambda: self._two_stage_search(vector, k, modality))

        def run() -> list[dict[str, Any]]:
            query = self._table.search(vector, vector_column_name="vector").metric("cosine").limit(k)
            query = query.select([*self._columns, "_distance"])
            if modality is not None:
                query = query.where(f"modality = {modality}", prefilter=True)
            if exact:
                return query.bypass_vector_index().to_list()
            return query.nprobes(ANN_NPROBES).refine_factor(ANN_REFINE_FACTOR).to_list()

        return [_hit(row, 1.0 - float(row["_distance"])) for row in self._read(run)]

    def _two_stage_search(self, vector: np.ndarray, k: int, modality: int | None) -> list[Hit]:
        """``rescore_factor * k`` candidates by the codes, ranked by cosine similarity of their float32 vectors."""
        rows = self._rows_with_vectors(self._candidates(vector, self.manifest.candidates(k), modality))
        if not rows:
            return []
        order, scores = cosine_rescore(np.stack([np.asarray(row["vector"]) for row in rows]), vector, k)
        return [_hit(rows[position], float(score)) for position, score in zip(order, scores)]

    def _candidates(self, vector: np.ndarray, count: int, modality: int | None) -> list[int]:
        """Row ids of the ``count`` best first-stage scores: int8 dot products of the codes, or (binary) the float32
        query against the sign bits."""
        row_ids, modalities, codes = self._stored_codes()
        rows = None if modality is None else np.flatnonzero(modalities == modality)  # filtered before the first stage
        if self.manifest.vector_precision == "binary":
            chosen = asymmetric_candidates(codes if rows is None else codes[:, rows], vector, count)
        else:
            query = quantize_embeddings(vector[None], Precision.INT8, ranges=self._int8_ranges().ranges)[0]
            chosen = int8_candidates(codes if rows is None else codes[rows], query, count)
        return row_ids[chosen if rows is None else rows[chosen]].tolist()

    def _stored_codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) row ids, (N,) modality bits and the codes of the version reads see, read once per version: (N, D)
        int8 codes, or binary the packed bits by byte, (ceil(D / 8), N) uint8 (:func:`byte_columns`)."""
        version = self._table.version
        if self._codes is None or self._codes[0] != version:
            query = self._table.search().select(["modality", QUANTIZED_COLUMN]).with_row_id(True).limit(None)
            table = query.to_arrow()
            binary = self.manifest.vector_precision == "binary"
            precision = Precision.UBINARY if binary else Precision.INT8
            column = table[QUANTIZED_COLUMN].combine_chunks()
            codes = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=precision.dtype)
            codes = codes.reshape(len(table), precision.width(self.manifest.dim))
            row_ids = np.asarray(table["_rowid"].to_numpy(), dtype=np.uint64)
            modalities = np.asarray(table["modality"].to_numpy(), dtype=np.int64)
            self._codes = (version, row_ids, modalities, byte_columns(codes) if binary else codes)
        return self._codes[1], self._codes[2], self._codes[3]

    def _rows_with_vectors(self, row_ids: list[int]) -> list[dict[str, Any]]:
        """The records with these row ids, with their float32 vectors."""
        if not row_ids:
            return []
        return self._table.take_row_ids(row_ids).select([*self._columns, "vector"]).to_list()

    def count(self) -> int:
        return int(self._read(self._table.count_rows))

    def refresh(self) -> bool:
        """Move reads to the latest committed version (a look at the table's version list when nothing changed)."""
        before = self._table.version
        try:
            self._table.checkout_latest()
        except (RuntimeError, OSError, ValueError):  # the table was replaced (its folder removed and rebuilt)
            self._table = self._db.open_table(TABLE)
            self._ranges = None
        self._columns = self._readable_columns()
        return self._table.version != before

    def version(self) -> int:
        return int(self._table.version)

    def stats(self) -> dict[str, Any]:
        table = self._read(lambda: self._table.search().select(["modality"]).limit(None).to_arrow())
        bits, counts = np.unique(np.asarray(table["modality"].to_numpy(), dtype=np.int64), return_counts=True)
        items = {modality_name(int(b)): int(c) for b, c in zip(bits, counts)}
        size = storage.tree_size(storage.join(self.folder, f"{TABLE}.lance"))
        return {"items": items, "total": int(counts.sum()), "bytes": size, "version": self.version()}

    def has_ann_index(self) -> bool:
        return any(index.index_type.upper().startswith("IVF") for index in self._table.list_indices())

    def optimize(self) -> bool:
        """Compact the many small commits of a build, then build or refresh the ANN and scalar indexes (int8 indexes
        without ranges first take them from their vectors)."""
        if self.manifest.vector_precision == "int8" and self._recorded_ranges() is None:
            self._calibrate()
        self._table.optimize(cleanup_older_than=CLEANUP_OLDER_THAN)
        rows = self.count()
        if rows < self.manifest.ann_threshold or self.manifest.vector_precision != "float32":
            return False  # quantised indexes search their codes exhaustively
        if not self.has_ann_index():
            from lancedb.index import Bitmap, IvfSq

            logger.info("building the approximate index over %d rows", rows)
            config = IvfSq(distance_type="cosine", num_partitions=ann_partitions(rows))
            self._table.create_index("vector", config=config, replace=True)
            self._table.create_index("modality", config=Bitmap(), replace=True)
        return True


def _vectors(batch: Any) -> np.ndarray:
    """The (N, D) float32 ``vector`` column of an Arrow record batch."""
    column = batch.column("vector")
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(batch), -1)


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
