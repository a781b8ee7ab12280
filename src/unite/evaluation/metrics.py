"""Retrieval metrics as pure functions over score matrices and graded relevance judgements.

Conventions (written once, used by every benchmark):

- ``scores`` is a (Q, N) float array, one row per query, one column per candidate; higher is better. Columns
  holding ``-inf`` are padding (per-query candidate pools of unequal size) and rank last.
- ``relevance`` is a (Q, N) integer array of graded judgements; a grade above 0 is relevant (TREC's rule).
- Ties are broken pessimistically: among equal scores the non-relevant candidates rank first, so a model
  whose embeddings collapse to one vector scores at the bottom, not the top.
- ``recall@k`` follows the retrieval benchmarks (Flickr30K, MSCOCO, MSR-VTT, CaReBench, ...): the share of
  queries with at least one relevant candidate among the first ``k`` (trec_eval's ``success@k``, ranx's
  ``hit_rate@k``). With one relevant candidate per query it equals the IR recall.
- ``precision@k`` divides by ``k`` (trec_eval's ``P_k``); MMEB's precision@1 is the share of queries whose
  first candidate is the positive.
- ``ndcg@k`` uses linear gains (the grade) and the discount ``1 / log2(rank + 1)`` (trec_eval's ``ndcg_cut``).
- ``mrr@k`` is ``1 / rank`` of the first relevant candidate when that rank is at most ``k``, else 0.
- ``median_rank`` and ``mean_rank`` are over the rank (1-based) of each query's first relevant candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from unite.errors import ConfigError

__all__ = [
    "CUTOFF_METRICS",
    "DEFAULT_METRICS",
    "RANK_METRICS",
    "aggregate",
    "first_relevant_rank",
    "parse_metric",
    "query_metrics",
    "top_gains",
]

#: Metrics that take a cutoff ``@k``.
CUTOFF_METRICS = ("recall", "precision", "ndcg", "mrr")
#: Metrics over the rank of the first relevant candidate.
RANK_METRICS = ("median_rank", "mean_rank")
#: What every result records unless its task asks for others.
DEFAULT_METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@10", "mrr@10", "median_rank")

_PATTERN = re.compile(r"^(?P<kind>[a-z_]+)@(?P<k>[0-9]+)$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; ``"median_rank"`` gives ``("median_rank", None)``.

    Raises:
        ConfigError: the name is not a known metric.
    """
    known = ", ".join([f"{kind}@K" for kind in CUTOFF_METRICS] + list(RANK_METRICS))
    if not isinstance(name, str):
        raise ConfigError(f"a metric must be a string such as 'recall@1', got {name!r}")
    if name in RANK_METRICS:
        return name, None
    match = _PATTERN.match(name)
    if match is None or match["kind"] not in CUTOFF_METRICS:
        raise ConfigError(f"unknown metric {name!r}; expected one of {known}")
    k = int(match["k"])
    if k < 1:
        raise ConfigError(f"metric {name!r}: the cutoff must be at least 1")
    return match["kind"], k


def first_relevant_rank(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each query's best-scored relevant candidate, ties broken pessimistically.

    Args:
        scores: (Q, N) float scores.
        relevance: (Q, N) integer grades; every row needs at least one grade above 0.

    Returns:
        (Q,) int64 ranks: 1 + the candidates scoring higher + the non-relevant ones scoring the same.
    """
    relevant = relevance > 0
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant candidate")
    best = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    higher = (scores > best).sum(axis=1)
    tied_negatives = ((scores == best) & ~relevant).sum(axis=1)
    return (1 + higher + tied_negatives).astype(np.int64)


def top_gains(scores: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
    """Grades of the first ``k`` candidates of each query's ranking (pessimistic ties), zero-padded.

    Args:
        scores: (Q, N) float scores.
        relevance: (Q, N) integer grades.
        k: how many ranks to keep.

    Returns:
        (Q, k) grades in rank order; positions beyond N are 0.
    """
    queries, candidates = scores.shape
    gains = np.zeros((queries, k), dtype=np.float64)
    depth = min(k, candidates)
    if depth == 0:
        return gains
    # The k-th largest score of each row; only candidates at or above it can reach the first k ranks.
    threshold = -np.partition(-scores, depth - 1, axis=1)[:, depth - 1]
    for row in range(queries):
        index = np.flatnonzero(scores[row] >= threshold[row])
        order = np.lexsort((relevance[row, index] > 0, -scores[row, index]))[:depth]
        gains[row, : len(order)] = relevance[row, index[order]]
    return gains


def query_metrics(scores: np.ndarray, relevance: np.ndarray, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-query values of ``metrics`` (names such as ``recall@5``, ``ndcg@10``, ``median_rank``).

    Args:
        scores: (Q, N) float scores, higher is better; ``-inf`` marks padding.
        relevance: (Q, N) integer grades, above 0 is relevant; each row needs one relevant candidate.
        metrics: metric names, see :func:`parse_metric`.

    Returns:
        name -> (Q,) float64 values; rank metrics give each query's first relevant rank.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevance = np.asarray(relevance)
    if scores.shape != relevance.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} must be equal (Q, N) shapes")
    parsed = {name: parse_metric(name) for name in metrics}
    ranks = first_relevant_rank(scores, relevance)
    depth = max([k for _, k in parsed.values() if k is not None], default=0)
    gains = top_gains(scores, relevance, depth) if depth else np.zeros((len(scores), 0))
    ideal = -np.sort(-np.clip(relevance, 0, None), axis=1)[:, :depth].astype(np.float64)
    if ideal.shape[1] < depth:
        ideal = np.pad(ideal, ((0, 0), (0, depth - ideal.shape[1])))
    discount = 1.0 / np.log2(np.arange(2, depth + 2))
    out: dict[str, np.ndarray] = {}
    for name, (kind, k) in parsed.items():
        if kind in RANK_METRICS:
            out[name] = ranks.astype(np.float64)
        elif kind == "recall":
            out[name] = (ranks <= k).astype(np.float64)
        elif kind == "precision":
            out[name] = (gains[:, :k] > 0).sum(axis=1) / k
        elif kind == "mrr":
            out[name] = np.where(ranks <= k, 1.0 / ranks, 0.0)
        elif kind == "ndcg":
            dcg = (np.clip(gains[:, :k], 0, None) * discount[:k]).sum(axis=1)
            idcg = (ideal[:, :k] * discount[:k]).sum(axis=1)
            out[name] = dcg / idcg
    return out


def aggregate(per_query: Mapping[str, Iterable[float]]) -> dict[str, float]:
    """Average per-query values: the median for ``median_rank``, the mean for everything else."""
    out = {}
    for name, values in per_query.items():
        array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        if array.size == 0:
            out[name] = float("nan")
        elif name == "median_rank":
            out[name] = float(np.median(array))
        else:
            out[name] = float(array.mean())
    return out
