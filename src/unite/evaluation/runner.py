"""Run one task: encode what the cache lacks, search exactly in chunks, score, describe how it was made.

Under ``torchrun`` (``torch.distributed`` initialised) every rank encodes its share of the missing items and
writes it to the shared cache folder, with the list of the items it could not encode; rank 0 then reads all
shards and lists, searches and returns the result. An item that cannot be encoded is skipped and reported, never
the end of the run.
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

from unite.errors import ConfigError
from unite.evaluation.cache import EmbeddingCache, checkpoint_fingerprint, item_key, namespace_key
from unite.evaluation.loaders import Entry, TaskData
from unite.evaluation.metrics import aggregate, parse_metric, query_metrics
from unite.evaluation.reports import DEFAULT_RANKINGS_DEPTH, library_versions, write_rankings
from unite.evaluation.tasks import TaskSpec
from unite.models.encoder import DEFAULT_BATCH_SIZE, EncodeResult
from unite.types import Modality

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "evaluate_task", "modality_gap", "rank_distribution", "ranking_records", "rankings_depth"]

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
        cache_dir: embedding cache root; ``None`` keeps embeddings in memory only (one process only).
        setting_overrides: encoding settings the user fixed explicitly; they win over the task's protocol and
            are recorded as deviations from it.
        query_instruction, document_instruction: replace the task's instructions when given.
        write_chunk: items encoded between cache writes.
        search_elements: score-matrix elements computed at once on the device.
        show_progress: progress bar per task (default: on).
        revision: the checkpoint revision, recorded.
        rank, world_size: this process's share of encoding; default from ``torch.distributed``.
        save_rankings: write each task's rankings beside its result (``<task>.rankings.jsonl``).
        rankings_depth: candidates kept per query in the rankings file (``None``: all); never fewer than the
            largest metric cutoff, and always down to the first relevant candidate.
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
    save_rankings: bool = False
    rankings_depth: int | None = DEFAULT_RANKINGS_DEPTH

    def __post_init__(self) -> None:
        for name in ("batch_size", "write_chunk", "search_elements"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.rankings_depth is not None and self.rankings_depth < 1:
            raise ConfigError(f"rankings_depth must be at least 1 (or None for all), got {self.rankings_depth}")


@dataclass
class _Prepared:
    """A task's entries as encoded (instructions applied) and the cache key of each."""

    queries: list[Entry]
    corpus: list[Entry]
    query_keys: dict[str, str]
    corpus_keys: dict[str, str]
    items: dict[str, Any]  # key -> item, every unique item once, queries first


def evaluate_task(
    encoder: Any,
    spec: TaskSpec,
    data: TaskData,
    config: EvalConfig | None = None,
    rankings_path: str | Path | None = None,
) -> dict | None:
    """Evaluate ``encoder`` on one loaded task; returns the result record (``None`` on ranks other than 0).

    An item that cannot be encoded never ends the run: it is not cached (a rerun tries it again), a candidate
    that failed leaves the corpus, every judgement and pool, and a query that failed, or whose every relevant
    candidate failed, is not scored. The metrics are over the scored queries; ``counts`` and ``skipped`` say
    what was left out and why (what the loader dropped included).

    Args:
        rankings_path: where to write the rankings (one JSON line per scored query; see :func:`ranking_records`).

    Raises:
        ConfigError: several ranks without a cache folder, or items of other ranks neither cached nor reported.
    """
    config = config or EvalConfig()
    rank, world_size = _distributed(config)
    data = data.limited(config.limit)
    settings = encoder.settings.replace(**dict(spec.settings)).replace(**dict(config.setting_overrides))
    prepared = _prepare(spec, data, config)
    fingerprint = checkpoint_fingerprint(encoder.model)
    dtype = str(encoder.dtype).removeprefix("torch.")
    namespace = namespace_key(fingerprint, settings, dtype)
    cache = EmbeddingCache(
        config.cache_dir,
        namespace,
        {"checkpoint": encoder.name_or_path, "checkpoint_sha256": fingerprint, "dtype": dtype, **settings.to_dict()},
    )
    if world_size > 1 and cache.folder is None:
        raise ConfigError(f"task {spec.name}: {world_size} ranks share the encoding through a cache folder; set one")
    missing = [key for key in prepared.items if key not in cache]
    with _settings_applied(encoder, settings) as task_encoder:
        # Shares are cut from every unique item, not from what this rank found missing, so they do not depend on
        # when each rank read the cache.
        share = [key for position, key in enumerate(prepared.items) if position % world_size == rank]
        own = _encode_missing(task_encoder, spec, [key for key in share if key not in cache], prepared, cache, config)
    if world_size > 1:
        cache.write_failures(spec.name, rank, own)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        cache.reload()
        if rank != 0:
            return None
    failed = _failures(spec, prepared, cache, own, world_size)
    scored = data.without(_skipped_entries(prepared, failed))
    result = _score(encoder, spec, data, scored, prepared, cache, config, rankings_path)
    result["cache"] = {
        "namespace": namespace,
        "hits": len(prepared.items) - len(missing),
        "encoded": sum(1 for key in missing if key in cache),
        "failed": len(failed),
        "world_size": world_size,
    }
    result.update(_provenance(encoder, spec, data, config, settings, dtype, fingerprint))
    return {key: result[key] for key in _RESULT_ORDER if key in result}


#: The order of a result record's sections (the long lists last).
_RESULT_ORDER = (
    "task", "main_metric", "metrics", "paper", "counts", "settings", "protocol", "checkpoint", "versions", "date",
    "cache", "rankings", "diagnostics", "skipped", "spec",
)


def _prepare(spec: TaskSpec, data: TaskData, config: EvalConfig) -> _Prepared:
    query_instruction = config.query_instruction or spec.query_instruction
    document_instruction = config.document_instruction or spec.document_instruction
    queries = [Entry(e.id, e.item.with_instruction(query_instruction)) for e in data.queries]
    corpus = [Entry(e.id, e.item.with_instruction(document_instruction)) for e in data.corpus]
    query_keys = {e.id: item_key(e.item) for e in queries}
    corpus_keys = {e.id: item_key(e.item) for e in corpus}
    items: dict[str, Any] = {}
    for entry, key in [*zip(queries, query_keys.values()), *zip(corpus, corpus_keys.values())]:
        items.setdefault(key, entry.item)
    return _Prepared(queries, corpus, query_keys, corpus_keys, items)


def _score(
    encoder: Any,
    spec: TaskSpec,
    data: TaskData,
    scored: TaskData,
    prepared: _Prepared,
    cache: EmbeddingCache,
    config: EvalConfig,
    rankings_path: str | Path | None,
) -> dict[str, Any]:
    """Search the scored queries against the candidates left; the metrics, counts and diagnostics."""
    kept_queries, kept_corpus = {e.id for e in scored.queries}, {e.id for e in scored.corpus}
    queries = [e for e in prepared.queries if e.id in kept_queries]
    corpus = [e for e in prepared.corpus if e.id in kept_corpus]
    query_vectors = _vectors(cache, [prepared.query_keys[e.id] for e in queries], encoder)
    corpus_vectors = _vectors(cache, [prepared.corpus_keys[e.id] for e in corpus], encoder)
    if queries:
        per_query, ranks, histograms = _search(
            query_vectors, corpus_vectors, queries, corpus, scored, spec, config, encoder
        )
    else:
        per_query = {name: np.zeros(0) for name in spec.metrics}
        ranks, empty = np.zeros(0, dtype=np.int64), [0] * (len(HISTOGRAM_EDGES) - 1)
        histograms = {"positives": empty, "negatives": list(empty)}
    result: dict[str, Any] = {
        "task": spec.name,
        "main_metric": spec.main_metric,
        "metrics": aggregate(per_query),
        "paper": dict(spec.paper),
        "counts": _counts(data, scored, len(prepared.items)),
        "skipped": [{"role": role, "id": item_id, "reason": reason} for role, item_id, reason in scored.skipped],
    }
    if rankings_path is not None:
        records = ranking_records(query_vectors, corpus_vectors, queries, corpus, scored, spec, config, encoder)
        result["rankings"] = write_rankings(rankings_path, records, rankings_depth(spec, config))
    result["diagnostics"] = {
        "modality_gap": (
            modality_gap(query_vectors, _modalities(queries), corpus_vectors, _modalities(corpus)) if queries else {}
        ),
        "score_histogram": {"edges": HISTOGRAM_EDGES.round(3).tolist(), **histograms},
        "rank_distribution": rank_distribution(ranks),
    }
    return result


def _counts(data: TaskData, scored: TaskData, unique_items: int) -> dict[str, Any]:
    """How many queries and candidates the task has, how many were scored or searched, and how many skipped.

    ``queries`` = ``queries_scored`` + ``queries_skipped``; ``candidates`` = ``candidates_searched`` +
    ``candidates_skipped``; the skipped ones include what the loader dropped (``TaskData.skipped``).
    """
    skipped_queries = sum(1 for role, _, _ in scored.skipped if role == "query")
    skipped_candidates = sum(1 for role, _, _ in scored.skipped if role == "candidate")
    return {
        "queries": len(scored.queries) + skipped_queries,
        "queries_scored": len(scored.queries),
        "queries_skipped": skipped_queries,
        "candidates": len(scored.corpus) + skipped_candidates,
        "candidates_searched": len(scored.corpus),
        "candidates_skipped": skipped_candidates,
        "candidates_per_query": _pool_size(scored),
        "judgements": sum(sum(1 for g in judged.values() if g > 0) for judged in scored.qrels.values()),
        "queries_without_judgements": len(data.dropped_queries),
        "unique_items": unique_items,
    }


def _provenance(
    encoder: Any, spec: TaskSpec, data: TaskData, config: EvalConfig, settings: Any, dtype: str, fingerprint: str
) -> dict[str, Any]:
    """How the result was made: settings, protocol, checkpoint, library versions, date and the task's spec."""
    protocol = {"settings": dict(spec.settings), "deviations": _deviations(spec, settings)}
    protocol["data"] = dict(data.protocol)  # what the loader applied: captions kept, rules, instructions
    return {
        "settings": {
            **settings.to_dict(),
            "batch_size": config.batch_size,
            "dtype": dtype,
            "device": str(encoder.device),
            "attn_implementation": getattr(encoder.model.config, "_attn_implementation", None),
            "query_instruction": config.query_instruction or spec.query_instruction,
            "document_instruction": config.document_instruction or spec.document_instruction,
            "limit": config.limit,
        },
        "protocol": protocol,
        "checkpoint": {
            "name_or_path": encoder.name_or_path,
            "revision": config.revision,
            "weights_sha256": fingerprint,
        },
        "versions": library_versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
    encoder: Any, spec: TaskSpec, keys: list[str], prepared: _Prepared, cache: EmbeddingCache, config: EvalConfig
) -> dict[str, str]:
    """Encode ``keys`` chunk by chunk into the cache; returns key -> reason of every item that failed (not cached)."""
    failures: dict[str, str] = {}
    with tqdm(total=len(keys), desc=spec.name, unit="item", disable=not config.show_progress or not keys) as bar:
        for start in range(0, len(keys), config.write_chunk):
            chunk = keys[start : start + config.write_chunk]
            result = _encode_chunk(encoder, [prepared.items[key] for key in chunk], config.batch_size)
            ok = np.asarray(result.ok, dtype=bool)
            cache.put([key for key, good in zip(chunk, ok) if good], np.asarray(result.embeddings)[ok])
            failures.update({chunk[index]: reason for index, reason in result.errors})
            bar.update(len(chunk))
    if failures:
        logger.warning("task %s: %d item(s) could not be encoded and are skipped", spec.name, len(failures))
    return failures


def _encode_chunk(encoder: Any, items: list[Any], batch_size: int) -> EncodeResult:
    """Embeddings of ``items`` with every failure recorded; an encoder without ``encode_with_errors`` raises."""
    if hasattr(encoder, "encode_with_errors"):
        return encoder.encode_with_errors(items, batch_size=batch_size, show_progress_bar=False, on_error="skip")
    vectors = np.asarray(encoder.encode(items, batch_size=batch_size, show_progress_bar=False))
    return EncodeResult(vectors, np.ones(len(items), dtype=bool), [])


def _failures(
    spec: TaskSpec, prepared: _Prepared, cache: EmbeddingCache, own: dict[str, str], world_size: int
) -> dict[str, str]:
    """Key -> reason of every item not in the cache after encoding: this rank's failures and the other ranks'."""
    reported = {**cache.read_failures(spec.name, world_size), **own} if world_size > 1 else own
    failed = [key for key in prepared.items if key not in cache]
    unexplained = [key for key in failed if key not in reported]
    if unexplained:
        raise ConfigError(
            f"task {spec.name}: {len(unexplained)} item(s) are neither in the cache nor reported as failed by any "
            "rank; did every rank finish, and do all of them see the same cache folder?"
        )
    return {key: reported[key] for key in failed}


def _skipped_entries(prepared: _Prepared, failed: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(role, id, reason)`` of every query and candidate whose item failed, each reason naming its own files."""
    skipped = []
    sides = (("query", prepared.queries, prepared.query_keys), ("candidate", prepared.corpus, prepared.corpus_keys))
    for role, entries, keys in sides:
        for entry in entries:
            key = keys[entry.id]
            if key in failed:
                skipped.append((role, entry.id, _own_reason(failed[key], prepared.items[key], entry.item)))
    return skipped


def _own_reason(reason: str, encoded: Any, item: Any) -> str:
    """``reason`` of the ``encoded`` item, told of ``item``: items are cached by content, so two files with the same
    bytes are one item, and the reason names the files of the one that was encoded."""
    if encoded is item:
        return reason
    for theirs, ours in zip(_sources(encoded), _sources(item)):
        if isinstance(theirs, (str, Path)) and isinstance(ours, (str, Path)):
            reason = reason.replace(str(theirs), str(ours))
    return reason


def _sources(item: Any) -> list[Any]:
    """Every media source of ``item`` in order, frames of frame lists and the files of clips included."""
    out = []
    for source in [*item.images, *item.videos]:
        for value in source if isinstance(source, (list, tuple)) else [source]:
            out.append(getattr(value, "path", value))
    return out


def _vectors(cache: EmbeddingCache, keys: list[str], encoder: Any) -> np.ndarray:
    """(len(keys), D) rows from the cache; (0, D) when there are none."""
    if keys:
        return cache.get(keys)
    return np.zeros((0, getattr(encoder, "embedding_dim", 0)), dtype=np.float32)


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
    grouping = _column_groups(corpus, data)
    for scores, relevance in _score_blocks(query_vectors, candidates, queries, data, corpus_index, config):
        values = query_metrics(*_grouped(scores, relevance, grouping), [*spec.metrics, "mean_rank"])
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
    """(scores, relevance) blocks of queries: against the whole corpus, or against each query's own pool.

    Columns are candidates (corpus order, or pool order); a query's excluded candidates (``data.excluded``) score
    ``-inf``, so that they rank after every other candidate, as padding does.
    """
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
        _mask_excluded(scores, block, data, corpus_index)
        yield scores, relevance


def _mask_excluded(scores: np.ndarray, block: list[Entry], data: TaskData, corpus_index: dict[str, int]) -> None:
    """Set ``-inf`` in ``scores`` (block rows x candidate columns) where a query excludes the candidate."""
    for row, entry in enumerate(block):
        excluded = data.excluded.get(entry.id)
        if not excluded:
            continue
        if data.pools is None:  # ids that left the corpus (skipped media) have no column
            columns = [corpus_index[cid] for cid in excluded if cid in corpus_index]
        else:
            gone = set(excluded)
            columns = [position for position, cid in enumerate(data.pools[entry.id]) if cid in gone]
        scores[row, columns] = -np.inf


def _group_keys(corpus: list[Entry], data: TaskData) -> list[tuple[int, str]] | None:
    """Each candidate's group (``data.candidate_groups``; a candidate it omits is a group of its own)."""
    if data.candidate_groups is None:
        return None
    groups = data.candidate_groups
    return [(0, groups[entry.id]) if entry.id in groups else (1, entry.id) for entry in corpus]


def _column_groups(corpus: list[Entry], data: TaskData) -> tuple[np.ndarray, np.ndarray] | None:
    """(column order, first position of each group in it) when candidates are ranked in groups, else ``None``."""
    keys = _group_keys(corpus, data)
    if keys is None:
        return None
    codes = {key: code for code, key in enumerate(dict.fromkeys(keys))}
    labels = np.array([codes[key] for key in keys], dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    return order, starts


def _grouped(
    scores: np.ndarray, relevance: np.ndarray, grouping: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and grades per group: a group scores its best member and takes its highest grade.

    Args:
        scores: (Q, N) candidate scores; relevance: (Q, N) grades.
        grouping: from :func:`_column_groups`; ``None`` returns the inputs.

    Returns:
        (Q, G) scores and (Q, G) grades, one column per group (CLIP4Clip ranks videos by the best of their
        captions this way).
    """
    if grouping is None:
        return scores, relevance
    order, starts = grouping
    best = np.maximum.reduceat(scores[:, order], starts, axis=1)
    return best, np.maximum.reduceat(relevance[:, order], starts, axis=1)


# ------------------------------------------------------------------------------------------------ rankings


def ranking_records(
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    queries: list[Entry],
    corpus: list[Entry],
    data: TaskData,
    spec: TaskSpec,
    config: EvalConfig,
    encoder: Any,
) -> Iterator[dict[str, Any]]:
    """Each scored query's ranking as the metrics see it, from the same score blocks as :func:`_search`.

    Yields per query: ``query_id``; ``candidates`` (how many it was ranked against); ``ranking``, a list of
    ``[candidate_id, score]`` best first, equal scores with the non-relevant first (the metrics' pessimistic
    ties), kept to :func:`rankings_depth` and always down to the first relevant candidate; ``complete`` (whether
    the list holds every candidate); ``judged``, candidate id -> grade of the query's judgements among them.
    Candidates the query excludes are not listed. When candidates are ranked in groups (``candidate_groups``),
    the ids are the groups', each scoring its best member and judged with its highest grade, as the metrics take
    them.
    """
    depth = rankings_depth(spec, config)
    corpus_ids = [entry.id for entry in corpus]
    corpus_index = {cid: column for column, cid in enumerate(corpus_ids)}
    candidates = torch.from_numpy(corpus_vectors).to(device=encoder.device, dtype=torch.float32)
    grouping = _column_groups(corpus, data)
    column_ids = corpus_ids if grouping is None else _group_ids(corpus, data, grouping)
    position = 0
    for scores, relevance in _score_blocks(query_vectors, candidates, queries, data, corpus_index, config):
        scores, relevance = _grouped(scores, relevance, grouping)
        for row in range(len(scores)):
            query_id = queries[position].id
            position += 1
            ids = column_ids if data.pools is None else data.pools[query_id]
            judged = _group_judgements(data.qrels.get(query_id, {}), data.candidate_groups)
            yield _ranking(query_id, ids, scores[row], relevance[row], judged, depth)


def _group_ids(corpus: list[Entry], data: TaskData, grouping: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """The id of each group column of :func:`_grouped`: the group's name (a candidate alone keeps its own id)."""
    order, starts = grouping
    groups = data.candidate_groups or {}
    return [groups.get(corpus[order[start]].id, corpus[order[start]].id) for start in starts]


def _group_judgements(judged: dict[str, int], groups: dict[str, str] | None) -> dict[str, int]:
    """Judgements per group (its highest grade) when candidates are ranked in groups, else as they are."""
    if groups is None:
        return judged
    out: dict[str, int] = {}
    for candidate_id, grade in judged.items():
        group = groups.get(candidate_id, candidate_id)
        out[group] = max(out.get(group, grade), grade)
    return out


def rankings_depth(spec: TaskSpec, config: EvalConfig) -> int | None:
    """Candidates kept per query: ``config.rankings_depth``, at least the largest metric cutoff; ``None``: all."""
    if config.rankings_depth is None:
        return None
    cutoffs = [k for k in (parse_metric(name)[1] for name in spec.metrics) if k is not None]
    return max([config.rankings_depth, *cutoffs])


def _ranking(
    query_id: str, ids: list[str], scores: np.ndarray, relevance: np.ndarray, judged: dict[str, int], depth: int | None
) -> dict[str, Any]:
    scores, relevance = scores[: len(ids)], relevance[: len(ids)]
    finite = np.flatnonzero(np.isfinite(scores))  # padding and excluded candidates are not ranked
    order = finite[np.lexsort((relevance[finite] > 0, -scores[finite]))]
    first = np.flatnonzero(relevance[order] > 0)
    keep = len(order) if depth is None else max(depth, int(first[0]) + 1 if first.size else 0)
    ranked = set(ids)
    return {
        "query_id": query_id,
        "candidates": len(order),
        "complete": keep >= len(order),
        "ranking": [[ids[column], float(scores[column])] for column in order[:keep]],
        "judged": {cid: int(grade) for cid, grade in judged.items() if cid in ranked},
    }


def _pool_size(data: TaskData) -> float | int:
    if data.pools is None:
        keys = _group_keys(data.corpus, data)
        return len(data.corpus) if keys is None else len(set(keys))
    return float(np.mean([len(data.pools[e.id]) for e in data.queries])) if data.queries else 0.0


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
