"""Incremental, resumable index builds: encode only new or changed entries, commit in small batches.

Every batch is one atomic commit, so a build that is killed loses at most the batch in flight; the index stays
searchable, and the next build picks up where it stopped (committed entries carry their content hash and are
skipped). The encoder is any callable, so this module knows nothing about models; :func:`ingest_vectors` takes
vectors computed before (embedding shards) through the same plan and commits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unite.errors import UniteError
from unite.index.sources import Entry, Scan, Skipped, locate, materialize
from unite.index.store import Record, VectorStore
from unite.settings import EncodingSettings

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "BuildPlan",
    "BuildReport",
    "EmbedResult",
    "build_index",
    "ingest_vectors",
    "plan_build",
]

logger = logging.getLogger(__name__)

#: Entries encoded and committed together; a killed build loses at most this many.
DEFAULT_COMMIT_EVERY = 64


class EmbedResult(Protocol):
    """What the embed callable returns (``UniteEncoder.encode_with_errors`` fits)."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]]


@dataclass
class BuildPlan:
    """What a build will do: entries to encode (new and changed) and stale ids to delete."""

    encode: list[Entry]
    unchanged: int
    changed: int
    delete: list[str]


@dataclass
class BuildReport:
    """What a build did, and what the folder walk left out (``skipped``)."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    ann_index: bool = False
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def encoded(self) -> int:
        return self.added + self.updated

    def summary(self) -> str:
        """One line: counts, then what the walk skipped (only the kinds that occurred)."""
        line = (
            f"{self.scanned} scanned: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.deleted} deleted, {len(self.failed)} failed in {self.seconds:.1f} s"
        )
        skipped = self.skipped
        parts = [
            _count(len(skipped.outside), "link pointing outside the folder", "links pointing outside the folder"),
            _count(len(skipped.unreadable), "unreadable folder", "unreadable folders"),
            _count(skipped.repeated, "repeated path (a file or folder already walked)", "repeated paths"),
            _count(skipped.broken, "broken link", "broken links"),
        ]
        parts = [part for part in parts if part]
        return line + (f"; skipped {', '.join(parts)}" if parts else "")


def _count(number: int, one: str, many: str) -> str:
    return "" if not number else f"{number} {one if number == 1 else many}"


def plan_build(
    entries: Sequence[Entry], existing: dict[str, tuple[str, str]], sync: bool = False, skipped: Skipped | None = None
) -> BuildPlan:
    """Compare scanned entries with the store's ``{id: (source, hash)}``.

    Stale ids of a source that is still there (clips of a video whose clip layout changed) are always deleted, and
    so are the ids of paths the walk now refuses (links pointing outside the folder); ids of sources that are gone
    only with ``sync``, except those under a folder the walk could not list.
    """
    skipped = skipped or Skipped()
    current = {entry.id for entry in entries}
    sources = {entry.source for entry in entries}
    encode = [entry for entry in entries if existing.get(entry.id, ("", ""))[1] != entry.content_hash]
    changed = sum(1 for entry in encode if entry.id in existing)
    delete = [
        record_id
        for record_id, (source, _) in existing.items()
        if record_id not in current and _stale(source, sources, skipped, sync)
    ]
    return BuildPlan(encode, len(entries) - len(encode), changed, delete)


def _stale(source: str, sources: set[str], skipped: Skipped, sync: bool) -> bool:
    """Whether a record of ``source`` that the scan did not produce goes."""
    if source in skipped.kept:
        return False
    if source in sources or _under(source, skipped.outside):
        return True
    return sync and not _under(source, skipped.unreadable)


def _under(source: str, paths: Sequence[str]) -> bool:
    """Whether a folder source (a relative path) is one of ``paths`` or lies under one of them."""
    return any(source == path or source.startswith(path + "/") for path in paths)


def build_index(
    store: VectorStore,
    entries: Sequence[Entry],
    embed: Callable[[list[Any]], EmbedResult],
    settings: EncodingSettings | None = None,
    sync: bool = False,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    progress: Callable[[int], None] | None = None,
) -> BuildReport:
    """Bring ``store`` up to date with ``entries``.

    Args:
        store: the open index.
        entries: from :func:`unite.index.sources.scan_source` (a :class:`Scan` also brings what its walk skipped).
        embed: items -> result with ``embeddings`` (N, D), ``ok`` (N,) and ``errors`` [(index, reason)].
        settings: encoding settings, used to decode clips.
        sync: also delete the entries of sources that are gone.
        commit_every: entries per encode-and-commit batch.
        progress: called with the number of entries just handled.

    Returns:
        What was added, updated, deleted and what failed (failed entries are retried by the next build).
    """
    settings = settings or EncodingSettings()

    def encode(batch: list[Entry], report: BuildReport) -> list[Record]:
        return _encode_batch(batch, embed, settings, report)

    return _update(store, entries, encode, sync, commit_every, progress)


def ingest_vectors(
    store: VectorStore,
    entries: Sequence[Entry],
    vectors: Callable[[list[Entry]], np.ndarray],
    sync: bool = False,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    progress: Callable[[int], None] | None = None,
) -> BuildReport:
    """Bring ``store`` up to date with entries whose vectors were computed before (embedding shards).

    The same plan, commits and ``--sync`` rules as :func:`build_index`; new and changed entries take their
    vectors from ``vectors`` instead of a model.

    Args:
        store: the open index.
        entries: from :func:`unite.index.shards.scan_shards` (a :class:`Scan`: its ``skipped.invalid`` rows are
            reported as failed, and the records of ``skipped.kept`` sources stay).
        vectors: entries -> (N, D) float32, row i the vector of entry i, stored as given.
        sync: also delete the entries of sources that are gone.
        commit_every: entries per commit.
        progress: called with the number of entries just handled.
    """

    def take(batch: list[Entry], report: BuildReport) -> list[Record]:
        rows = np.asarray(vectors(batch), dtype=np.float32)
        return [_record(entry, row) for entry, row in zip(batch, rows)]

    return _update(store, entries, take, sync, commit_every, progress)


def _update(
    store: VectorStore,
    entries: Sequence[Entry],
    make_records: Callable[[list[Entry], BuildReport], list[Record]],
    sync: bool,
    commit_every: int,
    progress: Callable[[int], None] | None,
) -> BuildReport:
    """Plan against the store, delete what is stale, then write ``make_records`` of each batch in one commit."""
    started = time.perf_counter()
    existing = store.content_hashes()
    skipped = entries.skipped if isinstance(entries, Scan) else Skipped()
    plan = plan_build(entries, existing, sync=sync, skipped=skipped)
    report = BuildReport(scanned=len(entries), unchanged=plan.unchanged, skipped=skipped)
    report.failed.extend(skipped.invalid)  # lines or rows that could not be used: reported, retried next time
    if plan.delete:
        store.delete(plan.delete)
        report.deleted = len(plan.delete)
    for start in range(0, len(plan.encode), commit_every):
        batch = plan.encode[start : start + commit_every]
        records = make_records(batch, report)
        store.upsert(records)
        for record in records:
            if record.id in existing:
                report.updated += 1
            else:
                report.added += 1
        if progress is not None:
            progress(len(batch))
    report.ann_index = store.optimize()
    report.seconds = time.perf_counter() - started
    return report


def _encode_batch(
    batch: list[Entry], embed: Callable[[list[Any]], EmbedResult], settings: EncodingSettings, report: BuildReport
) -> list[Record]:
    items: list[Any] = []
    ready: list[Entry] = []
    for entry in batch:
        try:
            items.append(materialize(entry, settings))
            ready.append(entry)
        except UniteError as error:
            report.failed.append((entry.id, str(error)))
    if not items:
        return []
    result = embed(items)
    reasons = dict(result.errors)
    records = []
    for index, entry in enumerate(ready):
        if not result.ok[index]:
            report.failed.append((entry.id, reasons.get(index, "not embedded")))
            continue
        records.append(_record(entry, result.embeddings[index]))
    return records


def _record(entry: Entry, vector: np.ndarray) -> Record:
    root, path = _location(entry)
    return Record(
        id=entry.id,
        vector=np.asarray(vector, dtype=np.float32),
        modality=entry.modality,
        source=entry.source,
        content_hash=entry.content_hash,
        path=path,
        start=entry.start,
        end=entry.end,
        text=entry.text,
        metadata=entry.metadata,
        root=root,
    )


def _location(entry: Entry) -> tuple[str, str]:
    """``(root, relative path)`` of an entry; an entry made without a root keeps only its file name as ``path``."""
    if entry.root or not entry.path:
        return entry.root, entry.path
    real = Path(os.path.realpath(entry.path))
    return locate(str(real), str(real.parent))
