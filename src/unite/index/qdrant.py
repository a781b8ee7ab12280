"""Qdrant backend: a Qdrant server reached by URL (distributed, HNSW built by the server), or Qdrant's
embedded local mode in ``DIR/qdrant`` (the same client API, used by the tests).

``vector_precision`` int8 / binary configure Qdrant's own quantisation (scalar int8 with its 0.99 quantile as the
range, or binary), kept in RAM, searched with rescoring by the original vectors and ``rescore_factor`` as the
oversampling. Only a server does this; embedded mode stores and searches float32 vectors exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unite.errors import ConfigError
from unite.index.storage import Location, local_path
from unite.index.store import Hit, IndexManifest, Record, VectorStore, _check_vector, check_modality, modality_name

__all__ = ["QdrantStore"]

_ID_NAMESPACE = uuid.UUID("6f1c3a52-52f5-4c1e-9a57-8e0c2f5b9d10")
_SCROLL_PAGE = 1024
#: Modality bits a record can carry (text=1, image=2, video=4 and their mixtures).
_MODALITIES = range(1, 8)
#: What embedded Qdrant says when another client holds its folder.
_LOCKED = "already accessed by another instance"


def _point_id(record_id: str) -> str:
    """Qdrant ids are integers or UUIDs; ours are strings, mapped by a UUID5 and kept in the payload."""
    return str(uuid.uuid5(_ID_NAMESPACE, record_id))


class QdrantStore(VectorStore):
    """``manifest.url`` set: a Qdrant server; unset: embedded local mode in ``DIR/qdrant`` (one process at a time)."""

    def __init__(self, folder: Location, manifest: IndexManifest, api_key: str | None = None) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise ConfigError("the Qdrant backend needs qdrant-client: pip install 'unite-embed[index]'") from None
        self.manifest = manifest
        self._models = models
        self._local = None if manifest.url else _local_folder(folder) / "qdrant"
        if self._local is None:
            self._client = QdrantClient(url=manifest.url, api_key=api_key)
        else:
            self._client = _local_client(QdrantClient, self._local, folder)
        self._name = manifest.collection
        if not self._client.collection_exists(self._name):
            self._client.create_collection(
                self._name,
                vectors_config=models.VectorParams(size=manifest.dim, distance=models.Distance.COSINE),
                quantization_config=_quantization_config(models, manifest.vector_precision),
            )
            if manifest.url:  # payload indexes exist only on a server; local mode filters by scanning
                self._client.create_payload_index(self._name, "modality", models.PayloadSchemaType.INTEGER)
                self._client.create_payload_index(self._name, "uid", models.PayloadSchemaType.KEYWORD)

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        points = [
            self._models.PointStruct(
                id=_point_id(r.id),
                vector=_check_vector(r.vector, self.manifest.dim).tolist(),
                payload={
                    "uid": r.id,
                    "modality": int(r.modality),
                    "source": r.source,
                    "content_hash": r.content_hash,
                    "path": r.path,
                    "start": r.start,
                    "end": r.end,
                    "text": r.text,
                    "metadata": r.metadata,
                    "root": r.root,
                },
            )
            for r in records
        ]
        self._client.upsert(self._name, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            selector = self._models.PointIdsList(points=[_point_id(i) for i in ids])
            self._client.delete(self._name, points_selector=selector, wait=True)

    def content_hashes(self) -> dict[str, tuple[str, str]]:
        result: dict[str, tuple[str, str]] = {}
        offset = None
        while True:
            points, offset = self._client.scroll(
                self._name, limit=_SCROLL_PAGE, offset=offset, with_payload=["uid", "source", "content_hash"]
            )
            for point in points:
                result[point.payload["uid"]] = (point.payload["source"], point.payload["content_hash"])
            if offset is None:
                return result

    def get(self, record_id: str) -> Hit | None:
        points = self._client.retrieve(self._name, ids=[_point_id(record_id)], with_payload=True)
        return _hit(points[0].payload, 0.0) if points else None

    def search(self, vector: np.ndarray, k: int = 10, modality: int | None = None, exact: bool = False) -> list[Hit]:
        models = self._models
        vector = _check_vector(vector, self.manifest.dim)
        modality = check_modality(modality)
        query_filter = None
        if modality is not None:
            condition = models.FieldCondition(key="modality", match=models.MatchValue(value=modality))
            query_filter = models.Filter(must=[condition])
        response = self._client.query_points(
            self._name,
            query=vector.tolist(),
            query_filter=query_filter,
            limit=k,
            with_payload=True,
            search_params=self._search_params(exact),
        )
        return [_hit(point.payload, float(point.score)) for point in response.points]

    def _search_params(self, exact: bool) -> Any:
        """Exact or HNSW search; on a server with quantised vectors, rescored ``candidates(1)`` x oversampled."""
        models = self._models
        if self.manifest.vector_precision == "float32" or not self.manifest.url:
            return models.SearchParams(exact=exact)
        oversampling = float(self.manifest.candidates(1))
        quantization = models.QuantizationSearchParams(ignore=False, rescore=True, oversampling=oversampling)
        return models.SearchParams(exact=exact, quantization=quantization)

    def count(self) -> int:
        return int(self._client.count(self._name, exact=True).count)

    def stats(self) -> dict[str, Any]:
        models, items = self._models, {}
        for bits in _MODALITIES:
            condition = models.FieldCondition(key="modality", match=models.MatchValue(value=bits))
            found = self._client.count(self._name, count_filter=models.Filter(must=[condition]), exact=True).count
            if found:
                items[modality_name(bits)] = int(found)
        size = None
        if self._local is not None:
            size = sum(file.stat().st_size for file in self._local.rglob("*") if file.is_file())
        return {"items": items, "total": self.count(), "bytes": size, "version": None}

    def optimize(self) -> bool:
        return bool(self.manifest.url)  # a server builds HNSW segments itself; local mode is exact

    def close(self) -> None:
        self._client.close()


def _quantization_config(models: Any, precision: str) -> Any:
    """Qdrant's quantisation for ``precision`` (None for float32)."""
    if precision == "int8":
        scalar = models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
        return models.ScalarQuantization(scalar=scalar)
    if precision == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def _local_folder(folder: Location) -> Path:
    """The local folder embedded Qdrant keeps its files in (a path, or a ``file:`` URI).

    Raises:
        ConfigError: ``folder`` is on object storage, which embedded Qdrant cannot use.
    """
    local = local_path(folder)
    if local is None:
        raise ConfigError(
            f"{folder}: embedded Qdrant keeps its files in a local folder; give --index as a local folder, or use a "
            "Qdrant server (--backend qdrant --qdrant-url URL), or the lancedb backend"
        )
    return local


def _local_client(client: Any, path: Path, folder: Location) -> Any:
    """Embedded Qdrant in ``path``; one process at a time, and saying so in one line when another holds it."""
    try:
        return client(path=str(path))
    except RuntimeError as error:
        if _LOCKED not in str(error):
            raise
        raise ConfigError(
            f"{folder}: another process holds this local-mode Qdrant index (embedded Qdrant opens in one process at "
            "a time); stop that process (a running `unite serve` or build) and retry, or put the index on a Qdrant "
            "server with --backend qdrant --qdrant-url URL"
        ) from None


def _hit(payload: dict[str, Any], score: float) -> Hit:
    return Hit(
        id=payload["uid"],
        score=score,
        modality=modality_name(int(payload["modality"])),
        path=payload.get("path") or "",
        start=payload.get("start"),
        end=payload.get("end"),
        text=payload.get("text") or "",
        metadata=payload.get("metadata") or {},
        content_hash=payload.get("content_hash") or "",
        root=payload.get("root") or "",
    )
