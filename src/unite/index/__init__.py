"""Durable multimodal indexes: a small store interface, LanceDB (default) and Qdrant backends, incremental builds.

Nothing here knows about models: builds take an embed callable (or, from embedding shards, the vectors computed
before: :mod:`unite.index.shards`), searches take a query vector. Indexes and shards may live at storage URIs
(:mod:`unite.index.storage`).
"""

from __future__ import annotations

from unite.index.build import BuildReport, build_index, ingest_vectors, plan_build
from unite.index.sources import Entry, Scan, Skipped, scan_folder, scan_jsonl, scan_source
from unite.index.store import (
    BACKENDS,
    DEFAULT_ANN_THRESHOLD,
    Hit,
    IndexManifest,
    Record,
    VectorStore,
    create_store,
    modality_name,
    open_store,
    read_manifest,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ANN_THRESHOLD",
    "BuildReport",
    "Entry",
    "Hit",
    "IndexManifest",
    "Record",
    "Scan",
    "Skipped",
    "VectorStore",
    "build_index",
    "create_store",
    "ingest_vectors",
    "modality_name",
    "open_store",
    "plan_build",
    "read_manifest",
    "scan_folder",
    "scan_jsonl",
    "scan_source",
]
