"""Writing embeddings to .npy or .parquet atomically, with a row mask when items were skipped."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from unite.errors import ConfigError

__all__ = ["FORMATS", "mask_path", "write_atomically", "write_embeddings"]

FORMATS = (".npy", ".parquet")
#: Row types written as they are (quantised embeddings); any other is written as float32.
KEPT_DTYPES = (np.dtype(np.float16), np.dtype(np.int8), np.dtype(np.uint8))


def mask_path(output: str | Path) -> Path:
    """Where the row mask of ``OUT.npy`` goes: ``OUT.mask.npy``."""
    output = Path(output)
    return output.with_name(output.stem + ".mask.npy")


def write_embeddings(
    output: str | Path,
    embeddings: np.ndarray,
    ok: np.ndarray | None = None,
    ids: list[Any] | None = None,
    lines: list[int] | None = None,
    precision: str | None = None,
) -> list[Path]:
    """Write (N, D) rows in input order; returns the files written.

    Rows are float32, or kept as they are when float16, int8 or uint8 (quantised embeddings, see
    :mod:`unite.quantization`; binary / ubinary rows are (N, D / 8) packed bytes).
    ``.npy``: the rows, plus ``OUT.mask.npy`` (bool, True where embedded) when ``ok`` is given.
    ``.parquet``: columns ``line``, ``id`` (when given), ``ok`` and ``embedding`` (null where not embedded), a
    fixed-size list of the rows' type (float32, float16, int8 or uint8); ``precision``, when given, is recorded
    in the schema metadata as ``unite.precision``.
    Each file is written to a temporary name and renamed, so an interrupted run leaves no half-written file.
    """
    output = Path(output)
    if output.suffix not in FORMATS:
        raise ConfigError(f"{output}: output must end with {' or '.join(FORMATS)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    embeddings = np.asarray(embeddings)
    kept = embeddings.dtype in KEPT_DTYPES
    embeddings = np.ascontiguousarray(embeddings, dtype=embeddings.dtype if kept else np.float32)
    if output.suffix == ".npy":
        written = [write_atomically(output, lambda f: np.save(f, embeddings))]
        if ok is not None:
            written.append(write_atomically(mask_path(output), lambda f: np.save(f, np.asarray(ok, dtype=bool))))
        return written
    return [write_atomically(output, lambda f: _write_parquet(f, embeddings, ok, ids, lines, precision))]


def _write_parquet(
    handle: Any,
    embeddings: np.ndarray,
    ok: np.ndarray | None,
    ids: list[Any] | None,
    lines: list[int] | None,
    precision: str | None = None,
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("writing .parquet needs pyarrow: pip install 'unite-embed[parquet]'") from None
    count, dim = embeddings.shape
    ok = np.ones(count, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    values = pa.array(embeddings.reshape(-1), type=pa.from_numpy_dtype(embeddings.dtype))
    vectors = pa.FixedSizeListArray.from_arrays(values, dim)
    vectors = pa.array([row if keep else None for row, keep in zip(vectors.to_pylist(), ok)], type=vectors.type)
    columns = {"line": pa.array(lines if lines is not None else range(1, count + 1), type=pa.int64())}
    if ids is not None:
        columns["id"] = pa.array([None if value is None else str(value) for value in ids], type=pa.string())
    columns["ok"] = pa.array(ok)
    columns["embedding"] = vectors
    table = pa.table(columns)
    if precision is not None:
        table = table.replace_schema_metadata({"unite.precision": precision})
    pq.write_table(table, handle)


def write_atomically(path: str | Path, write: Any) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then rename it over ``path``: readers
    see the old file or the whole new one, never half of it. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
