"""Run one task: encode what the cache lacks, search exactly in chunks, score, describe how it was made.

Under ``torchrun`` (``torch.distributed`` initialised) every rank encodes its share of the missing items and
writes it to the shared cache folder; rank 0 then reads all shards, searches and returns the result.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unite.errors import ConfigError, UniteError
from unite.evaluation.cache import EmbeddingCache, checkpoint_fingerprint, item_key, namespace_key
from unite.evaluation.loaders import Entry, TaskData
from unite.evaluation.metrics import aggregate, query_metrics
from unite.evaluation.reports import library_versions
from unite.evaluation.tasks import TaskSpec
from unite.models.encoder import DEFAULT_BATCH_SIZE
from unite.types import Modality

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "evaluate_task", "modality_gap", "rank_distribution"]

#: Items encoded between two cache writes: at most this much work is lost when a run is interrupted.
DEFAULT_WRITE_CHUNK = 256
#: Score-matrix elements computed at once (queries x candidates, or x candidates x dim for per-query pools).
DEFAULT_SEARCH_ELEMENTS = 1 << 25
#: Score histograms of positives and negatives: bins over the cosine range.
HISTOGRAM_EDGES = np.linspace(-1.0, 1.0, 41)
RANK_BUCKETS = ((1, 1), (2, 5), (6, 10), (11, 50), (51, 100), (101, None))


@dataclass
class EvalConfig:
    """How to run tasks, beyond the encoder's own settings.

    Attributes:
        batch_size: most items per encoder batch.
        limit: keep the first N queries (a smoke test; numbers not comparable).
        cache_dir: embedding cache root; ``None`` keeps embeddings in memory only.
        setting_overrides: encoding settings the user fixed explicitly; they win over the task's protocol and
            are recorded as deviations from it.
        query_instruction, document_instruction: replace the task's instructions when given.
        write_chunk: items encoded between cache writes.
        search_elements: score-matrix elements computed at once on the device.
        show_progress: progress bar per task (default: on).
        revision: the checkpoint revision, recorded.
        rank, world_size: this process's share of encoding; default from ``torch.distributed``.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    cache_dir: Path | None = None
    setting_overrides: Mapping[str, Any] = field(default_factory=dict)
    query_instruction: str | None = None
    document_instruction: str | None = None
    write_chunk: int = DEFAULT_WRITE_CHUNK
    search_elements: int = DEFAULT_SEARCH_ELEMENTS
    show_progress: bool = True
    revision: str | None = None
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "write_chunk", "search_elements"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")


def evaluate_task(encoder: Any, spec: TaskSpec, data: TaskData, config: EvalConfig | None = None) -> dict | None:
    """Evaluate ``encoder`` on one loaded task; returns the result record (``None`` on ranks other than 0).

    Raises:
        UniteError: an item cannot be encoded (naming the task, the query or candidate id and the reason).
    """
    config = config or EvalConfig()
    rank, world_size = _distributed(config)
    data = data.limited(config.limit)
    settings = encoder.settings.replace(**dict(spec.settings)).replace(**dict(config.setting_overrides))
    query_instruction = config.query_instruction or spec.query_instruction
    document_instruction = config.document_instruction or spec.document_instruction
    queries = [Entry(e.id, e.item.with_instruction(query_instruction)) for e in data.queries]
    corpus = [Entry(e.id, e.item.with_instruction(document_instruction)) for e in data.corpus]
    fingerprint = checkpoint_fingerprint(encoder.model)
    dtype = str(encoder.dtype).removeprefix("torch.")
    namespace = namespace_key(fingerprint, settings, dtype)
    cache = EmbeddingCache(
        config.cache_dir,
        namespace,
        {"checkpoint": encoder.name_or_path, "checkpoint_sha256": fingerprint, "dtype": dtype, **settings.to_dict()},
    )
    query_keys = [item_key(e.item) for e in queries]
    corpus_keys = [item_key(e.item) for e in corpus]
    labelled = [("query", e) for e in queries] + [("candidate", e) for e in corpus]
    entries: dict[str, tuple[str, Entry]] = {}
    for key, value in zip(query_keys + corpus_keys, labelled):
        entries.setdefault(key, value)
    missing = [key for key in entries if key not in cache]
    hits = len(entries) - len(missing)
    with _settings_applied(encoder, settings) as task_encoder:
        # Shares are cut from every unique item, not from what this rank found missing, so they do not depend on
        # when each rank read the cache.
        share = [key for position, key in enumerate(entries) if position % world_size == rank and key not in cache]
        _encode_missing(task_encoder, spec, share, entries, cache, config)
    if world_size > 1:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        cache.reload()
        if rank != 0:
            return None
    query_vectors, corpus_vectors = cache.get(query_keys), cache.get(corpus_keys)
    per_query, ranks, histograms = _search(query_vectors, corpus_vectors, queries, corpus, data, spec, config, encoder)
    return {
        "task": spec.name,
        "main_metric": spec.main_metric,
        "metrics": aggregate(per_query),
        "paper": dict(spec.paper),
        "counts": {
            "queries": len(queries),
            "candidates": len(corpus),
            "candidates_per_query": _pool_size(data),
            "judgements": sum(sum(1 for g in judged.values() if g > 0) for judged in data.qrels.values()),
            "queries_without_judgements": len(data.dropped_queries),
            "unique_items": len(entries),
        },
        "settings": {
            **settings.to_dict(),
            "batch_size": config.batch_size,
            "dtype": dtype,
            "device": str(encoder.device),
            "attn_implementation": getattr(encoder.model.config, "_attn_implementation", None),
            "query_instruction": query_instruction,
            "document_instruction": document_instruction,
            "limit": config.limit,
        },
        "protocol": {"settings": dict(spec.settings), "deviations": _deviations(spec, settings)},
        "checkpoint": {
            "name_or_path": encoder.name_or_path,
            "revision": config.revision,
            "weights_sha256": fingerprint,
        },
        "versions": library_versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cache": {"namespace": namespace, "hits": hits, "encoded": len(missing), "world_size": world_size},
        "diagnostics": {
            "modality_gap": modality_gap(query_vectors, _modalities(queries), corpus_vectors, _modalities(corpus)),
            "score_histogram": {"edges": HISTOGRAM_EDGES.round(3).tolist(), **histograms},
            "rank_distribution": rank_distribution(ranks),
        },
        "spec": spec.to_dict(),
    }


# ------------------------------------------------------------------------------------------------ encoding


def _distributed(config: EvalConfig) -> tuple[int, int]:
    if config.rank is not None or config.world_size is not None:
        rank, world_size = config.rank or 0, config.world_size or 1
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


class _settings_applied:
    """The encoder itself when its settings already match, else a view of the same model with ``settings``."""

    def __init__(self, encoder: Any, settings: Any) -> None:
        self.encoder, self.settings = encoder, settings
        self.position_scheme = getattr(encoder.model, "position_scheme", None)

    def __enter__(self) -> Any:
        if self.settings == self.encoder.settings:
            return self.encoder
        from unite.models.encoder import UniteEncoder

        return UniteEncoder(self.encoder.model, self.encoder.tokenizer, self.settings, self.encoder.name_or_path)

    def __exit__(self, *exc: Any) -> None:
        if self.position_scheme is not None:
            self.encoder.model.position_scheme = self.position_scheme


def _encode_missing(
    encoder: Any,
    spec: TaskSpec,
    keys: list[str],
    entries: dict[str, tuple[str, Entry]],
    cache: EmbeddingCache,
    config: EvalConfig,
) -> None:
    with tqdm(total=len(keys), desc=spec.name, unit="item", disable=not config.show_progress or not keys) as bar:
        for start in range(0, len(keys), config.write_chunk):
            chunk = keys[start : start + config.write_chunk]
            try:
                vectors = encoder.encode(
                    [entries[key][1].item for key in chunk], batch_size=config.batch_size, show_progress_bar=False
                )
            except UniteError as error:
                index = getattr(error, "item_index", None)
                if index is None:
                    raise
                role, entry = entries[chunk[index]]
                reason = getattr(error, "reason", str(error))
                raise type(error)(f"task {spec.name}: {role} {entry.id!r}: {reason}") from error
            cache.put(chunk, np.asarray(vectors))
            bar.update(len(chunk))


# -------------------------------------------------------------------------------------------------- search


def _search(
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    queries: list[Entry],
    corpus: list[Entry],
    data: TaskData,
    spec: TaskSpec,
    config: EvalConfig,
    encoder: Any,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, list[int]]]:
    """Exact search by chunked matrix products on the encoder's device; per-query metrics and histograms."""
    device = encoder.device
    corpus_index = {entry.id: column for column, entry in enumerate(corpus)}
    candidates = torch.from_numpy(corpus_vectors).to(device=device, dtype=torch.float32)
    per_query: dict[str, list[np.ndarray]] = {name: [] for name in spec.metrics}
    ranks: list[np.ndarray] = []
    positives = np.zeros(len(HISTOGRAM_EDGES) - 1, dtype=np.int64)
    negatives = np.zeros_like(positives)
    for scores, relevance in _score_blocks(query_vectors, candidates, queries, data, corpus_index, config):
        values = query_metrics(scores, relevance, [*spec.metrics, "mean_rank"])
        ranks.append(values.pop("mean_rank").astype(np.int64))
        for name in spec.metrics:
            per_query[name].append(values[name])
        finite = np.isfinite(scores)
        positives += np.histogram(np.clip(scores[relevance > 0], -1, 1), HISTOGRAM_EDGES)[0]
        negatives += np.histogram(np.clip(scores[finite & (relevance <= 0)], -1, 1), HISTOGRAM_EDGES)[0]
    merged = {name: np.concatenate(parts) for name, parts in per_query.items()}
    return merged, np.concatenate(ranks), {"positives": positives.tolist(), "negatives": negatives.tolist()}


def _score_blocks(
    query_vectors: np.ndarray,
    candidates: torch.Tensor,
    queries: list[Entry],
    data: TaskData,
    corpus_index: dict[str, int],
    config: EvalConfig,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scores, relevance) blocks of queries: against the whole corpus, or against each query's own pool."""
    dim = candidates.shape[1]
    if data.pools is None:
        step = max(1, config.search_elements // max(1, len(candidates)))
    else:
        width = max(len(pool) for pool in data.pools.values())
        step = max(1, config.search_elements // max(1, width * dim))
    for start in range(0, len(queries), step):
        block = queries[start : start + step]
        vectors = torch.from_numpy(query_vectors[start : start + step]).to(candidates.device, torch.float32)
        if data.pools is None:
            scores = (vectors @ candidates.T).cpu().numpy()
            relevance = np.zeros(scores.shape, dtype=np.int64)
            for row, entry in enumerate(block):
                for candidate_id, grade in data.qrels.get(entry.id, {}).items():
                    relevance[row, corpus_index[candidate_id]] = grade
        else:
            columns = np.full((len(block), width), -1, dtype=np.int64)
            relevance = np.zeros(columns.shape, dtype=np.int64)
            for row, entry in enumerate(block):
                pool = data.pools[entry.id]
                columns[row, : len(pool)] = [corpus_index[cid] for cid in pool]
                relevance[row, : len(pool)] = [data.qrels[entry.id].get(cid, 0) for cid in pool]
            index = torch.from_numpy(columns).to(candidates.device)
            gathered = candidates[index.clamp(min=0)]
            scores_t = torch.einsum("qd,qpd->qp", vectors, gathered)
            scores = scores_t.masked_fill(index < 0, float("-inf")).cpu().numpy()
        yield scores, relevance


def _pool_size(data: TaskData) -> float | int:
    if data.pools is None:
        return len(data.corpus)
    return float(np.mean([len(data.pools[e.id]) for e in data.queries]))


def _deviations(spec: TaskSpec, settings: Any) -> dict[str, dict[str, Any]]:
    used = dataclasses.asdict(settings)
    return {
        key: {"protocol": value, "used": getattr(used.get(key), "value", used.get(key))}
        for key, value in spec.settings.items()
        if getattr(used.get(key), "value", used.get(key)) != value
    }


# ----------------------------------------------------------------------------------------------- diagnostics


def _modalities(entries: list[Entry]) -> list[str]:
    names = []
    for entry in entries:
        flags = entry.item.modality
        names.append("+".join(flag.name.lower() for flag in Modality if flag in flags) or "empty")
    return names


def modality_gap(
    query_vectors: np.ndarray, query_modalities: list[str], corpus_vectors: np.ndarray, corpus_modalities: list[str]
) -> dict[str, float]:
    """Euclidean distance between the mean query and the mean candidate embedding, per pair of modalities.

    Args:
        query_vectors: (Q, D) embeddings; ``query_modalities`` names each row's modality (``text``,
            ``image``, ``text+image``, ...).
        corpus_vectors: (N, D) embeddings; ``corpus_modalities`` likewise.

    Returns:
        ``"query:<modality> -> candidate:<modality>"`` -> distance.
    """
    out = {}
    query_labels, corpus_labels = np.asarray(query_modalities), np.asarray(corpus_modalities)
    for query_modality in dict.fromkeys(query_modalities):
        query_mean = query_vectors[query_labels == query_modality].mean(axis=0)
        for corpus_modality in dict.fromkeys(corpus_modalities):
            corpus_mean = corpus_vectors[corpus_labels == corpus_modality].mean(axis=0)
            key = f"query:{query_modality} -> candidate:{corpus_modality}"
            out[key] = float(np.linalg.norm(query_mean.astype(np.float64) - corpus_mean))
    return out


def rank_distribution(ranks: np.ndarray) -> dict[str, Any]:
    """How many queries found their first relevant candidate at rank 1, 2-5, 6-10, 11-50, 51-100, above 100."""
    ranks = np.asarray(ranks)
    counts = {}
    for low, high in RANK_BUCKETS:
        label = str(low) if low == high else (f"{low}-{high}" if high else f">{low - 1}")
        counts[label] = int(((ranks >= low) & (ranks <= (high or np.inf))).sum())
    quantiles = {f"p{q}": float(np.percentile(ranks, q)) for q in (25, 50, 75, 90)} if ranks.size else {}
    return {"buckets": counts, "mean": float(ranks.mean()) if ranks.size else float("nan"), **quantiles}
