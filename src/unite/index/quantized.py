"""Two-stage search over quantised vectors: candidates from int8 codes or packed bits, then full-precision rescoring.

The first stage looks at ``rescore_factor * k`` candidates: int8 by the dot product of int8 codes (query and corpus
quantised with the same per-dimension ranges, :func:`unite.quantization.quantize_embeddings`), binary by the
asymmetric score of the packed sign bits (``x > 0``) against the float32 query, ``q . (2 * bits - 1)``, which
keeps the query's magnitudes (the Hamming distance between the query's bits and a document's,
:func:`hamming_distances`, throws them away and finds fewer true neighbours). The second stage ranks those
candidates by cosine similarity of the full float32 vectors and keeps ``k``. Pure numpy; the backends call these on
what they store.
"""

from __future__ import annotations

import numpy as np

from unite.errors import ConfigError

__all__ = [
    "DEFAULT_RESCORE_FACTORS",
    "VECTOR_PRECISIONS",
    "check_vector_precision",
    "default_rescore_factor",
    "cosine_rescore",
    "asymmetric_candidates",
    "asymmetric_scores",
    "byte_columns",
    "hamming_distances",
    "int8_candidates",
    "int8_scores",
    "sign_tables",
]

#: What an index may store for its first-stage search (besides the float32 vectors, always kept for rescoring).
VECTOR_PRECISIONS = ("float32", "int8", "binary")
#: Candidates looked at per result when the index does not say: the first stage keeps ``rescore_factor * k``.
#: Measured in benchmarks/quantization_report.py (docs/search.md): int8 matches float32 from x2 on; binary (the
#: asymmetric first stage) is within 2 points of float32 recall@10 at x20 on all but the hardest planted set (x50
#: there), at half the latency of an exact float32 pass.
DEFAULT_RESCORE_FACTORS = {"float32": 1, "int8": 4, "binary": 20}
#: Values converted and scored at once in :func:`int8_scores`: 1 MiB of float32, which stays in the CPU cache and
#: below the size at which a BLAS starts threads for a matrix-vector product (measured: 10 to 40x slower on 2 busy
#: cores at 384 x 1536, against 170 x 1536).
_BLOCK_VALUES = 2**18
#: Set bits of every byte value.
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
#: (256, 8) float32: row b holds the signs (+1 for a set bit, -1 for a clear one) of the byte value b, most
#: significant bit first, the order in which ``np.packbits`` packs dimensions.
_BYTE_SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2 - 1
#: Dimensions per packed byte.
_BITS = 8


def check_vector_precision(value: str) -> str:
    """``value`` if it is one of :data:`VECTOR_PRECISIONS`, else a :class:`ConfigError` listing them."""
    if value not in VECTOR_PRECISIONS:
        raise ConfigError(f"unknown vector precision {value!r}; expected one of {', '.join(VECTOR_PRECISIONS)}")
    return value


def default_rescore_factor(precision: str) -> int:
    """:data:`DEFAULT_RESCORE_FACTORS` of ``precision``."""
    return DEFAULT_RESCORE_FACTORS[check_vector_precision(precision)]


def int8_scores(codes: np.ndarray, query_codes: np.ndarray) -> np.ndarray:
    """Dot products of int8 codes: (N, D) corpus codes with the (D,) query codes, as (N,) float64.

    The codes are converted to float32 a small block of rows at a time into one reused buffer, so the work stays in
    the CPU cache and the codes are never held wider all at once (sums are exact up to 2**24).
    """
    query = np.asarray(query_codes, dtype=np.float32).reshape(-1)
    rows = max(1, _BLOCK_VALUES // max(1, codes.shape[1]))
    block = np.empty((rows, codes.shape[1]), dtype=np.float32)
    scores = np.empty(codes.shape[0], dtype=np.float64)
    for start in range(0, codes.shape[0], rows):
        part = codes[start : start + rows]
        np.copyto(block[: len(part)], part, casting="unsafe")
        scores[start : start + len(part)] = block[: len(part)] @ query
    return scores


def int8_candidates(codes: np.ndarray, query_codes: np.ndarray, count: int) -> np.ndarray:
    """Row indices of the ``count`` largest int8 dot products, best first."""
    return _best(int8_scores(codes, query_codes), count)


def hamming_distances(bits: np.ndarray, query_bits: np.ndarray) -> np.ndarray:
    """(N,) number of differing bits between (N, B) packed uint8 rows and (B,) packed query bits."""
    differing = np.bitwise_xor(np.asarray(bits, dtype=np.uint8), np.asarray(query_bits, dtype=np.uint8))
    return _POPCOUNT[differing].sum(axis=1, dtype=np.int64)


def byte_columns(bits: np.ndarray) -> np.ndarray:
    """(B, N) uint8: (N, B) packed rows turned so that byte j of every row is contiguous (what
    :func:`asymmetric_scores` reads; the same B x N bytes, 32x fewer than float32 vectors)."""
    return np.ascontiguousarray(np.asarray(bits, dtype=np.uint8).T)


def sign_tables(query: np.ndarray, width: int) -> np.ndarray:
    """Per-byte lookup tables of the asymmetric score: (width, 256) float32.

    Entry ``[j, b]`` is ``sum(query[8 j + i] * (+1 if bit i of b is set else -1) for i in 0..7)``, bit 0 the most
    significant (``np.packbits`` order). Dimensions past D (the zero padding of the last byte) count as 0.

    Args:
        query: (D,) float query, D <= 8 * width.
        width: packed bytes per row, ceil(D / 8).
    """
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if query.shape[0] > _BITS * width:
        raise ConfigError(f"query has {query.shape[0]} dimensions, packed rows of {width} bytes hold {_BITS * width}")
    padded = np.zeros(_BITS * width, dtype=np.float32)
    padded[: query.shape[0]] = query
    return padded.reshape(width, _BITS) @ _BYTE_SIGNS.T


def asymmetric_scores(columns: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``query . (2 * unpackbits(row)[:D] - 1)`` of every packed row, as (N,) float32.

    Each byte of a row is looked up in its 256-entry table (:func:`sign_tables`) and the B lookups are added: one
    gather of N bytes per byte column, never the unpacked corpus (N x D) in memory.

    Args:
        columns: (B, N) uint8, the packed bits by byte (:func:`byte_columns` of the (N, B) ``np.packbits`` rows).
        query: (D,) float query, D <= 8 * B.
    """
    tables = sign_tables(query, columns.shape[0])
    scores = np.zeros(columns.shape[1], dtype=np.float32)
    for table, column in zip(tables, columns):
        scores += table.take(column)
    return scores


def asymmetric_candidates(columns: np.ndarray, query: np.ndarray, count: int) -> np.ndarray:
    """Row indices of the ``count`` largest asymmetric scores (:func:`asymmetric_scores`), best first."""
    return _best(asymmetric_scores(columns, query).astype(np.float64), count)


def cosine_rescore(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank candidates by cosine similarity of their full vectors with the query.

    Args:
        vectors: (C, D) float32 candidate vectors.
        query: (D,) float32.
        k: how many to keep.

    Returns:
        (positions into ``vectors``, best first; their cosine similarities), each of length min(k, C).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    scores = (vectors @ query) / np.where(norms == 0, 1, norms)
    order = _best(scores.astype(np.float64), k)
    return order, scores[order]


def _best(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest scores, largest first; equal scores in index order (also at the cut)."""
    count = min(count, scores.shape[0])
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    cut = np.partition(scores, scores.shape[0] - count)[scores.shape[0] - count]  # the count-th largest score
    above = np.flatnonzero(scores > cut)
    chosen = np.concatenate([above, np.flatnonzero(scores == cut)[: count - above.shape[0]]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]
