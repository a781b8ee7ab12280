"""The small store interface every backend implements, the records it holds and the index manifest.

An index is a folder holding ``unite_index.json`` (the manifest: backend, model and its weights fingerprint,
encoding settings, embedding size) beside the backend's own files; the folder may be a storage URI
(``file://``, ``s3://``, ``gs://``: :mod:`unite.index.storage`), the manifest then read and written through
pyarrow's filesystem for it and the LanceDB table opened at the same URI. The manifest records how the corpus was
encoded so that a query is always encoded the same way. Nothing here knows about models: vectors arrive as numpy arrays.

Records keep ``path`` relative to ``root`` (the folder that was indexed); only :meth:`Hit.local_file` joins them,
on the machine that holds the files, and :meth:`Hit.to_dict` never shows ``root`` or an absolute path.
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from unite.errors import ConfigError
from unite.index import storage
from unite.index.quantized import check_vector_precision, default_rescore_factor
from unite.index.storage import Location
from unite.types import Modality

__all__ = [
    "BACKENDS",
    "DEFAULT_ANN_THRESHOLD",
    "MANIFEST_FILE",
    "Hit",
    "IndexManifest",
    "Record",
    "VectorStore",
    "create_store",
    "modality_name",
    "open_store",
    "read_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "unite_index.json"
#: 2: records carry ``root`` and ``path`` relative to it; the manifest records ``model_fingerprint``.
MANIFEST_FORMAT = 2
#: 3: the index stores quantised vectors (``vector_precision`` int8 or binary) besides the float32 ones; written
#: only by such indexes, so that versions that would ignore the quantised column refuse them.
QUANTIZED_FORMAT = 3
BACKENDS = ("lancedb", "qdrant")
#: Rows from which an approximate (ANN) index is built; below it exact search is fast enough.
DEFAULT_ANN_THRESHOLD = 50_000


def modality_name(bits: int) -> str:
    """``1`` -> ``text``, ``3`` -> ``text+image`` (the bits of docs/reference.md section 9)."""
    names = [name for flag, name in ((1, "text"), (2, "image"), (4, "video")) if bits & flag]
    return "+".join(names) or "none"


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both absolute and already resolved)."""
    try:
        return os.path.commonpath([os.fspath(path), os.fspath(folder)]) == os.fspath(folder)
    except ValueError:  # different drives, or one relative
        return False


@dataclass(frozen=True)
class Record:
    """One indexed entry: a file, a clip of a video file, or a JSONL item.

    Attributes:
        id: unique key; for a folder source the path relative to it, for a clip ``path#t=START,END``.
        vector: (D,) float32, L2-normalised.
        modality: bits text=1, image=2, video=4.
        source: groups the records of one source file or JSONL line (for clips and --sync).
        content_hash: sha256 of what was encoded; a change triggers re-encoding.
        path: the media or text file shown and thumbnailed, relative to ``root`` in POSIX form; empty for inline
            text.
        start, end: the clip's time range in seconds, or ``None`` for a whole item.
        text: the item's text (shown in results), possibly shortened.
        metadata: free JSON metadata from the source.
        root: the absolute folder ``path`` is relative to (kept on the server, never shown to clients); ``""`` in
            indexes built before format 2, whose ``path`` is absolute.
    """

    id: str
    vector: np.ndarray
    modality: int
    source: str
    content_hash: str
    path: str = ""
    start: float | None = None
    end: float | None = None
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    root: str = ""


#: The fields of a hit a client may see.
PUBLIC_FIELDS = ("id", "score", "modality", "path", "start", "end", "text", "metadata")


@dataclass(frozen=True)
class Hit:
    """A search result (or a looked-up record, with ``score`` 0).

    Attributes:
        path: relative to ``root`` (POSIX form); absolute in rows of indexes older than format 2 (``root`` "").
        content_hash: sha256 recorded at build time.
        root: the absolute folder ``path`` is relative to; server-side only.
    """

    id: str
    score: float
    modality: str
    path: str
    start: float | None
    end: float | None
    text: str
    metadata: dict[str, Any]
    content_hash: str = ""
    root: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Public fields only: id, score, modality, path (relative; for legacy absolute rows only the file name),
        start, end, text, metadata. Never root, never an absolute path."""
        shown = {name: getattr(self, name) for name in PUBLIC_FIELDS}
        if PurePath(self.path).is_absolute():
            shown["path"] = PurePath(self.path).name
        return shown

    def local_file(self) -> Path | None:
        """The file on this machine (root/path), or None when it is gone or its real path now lies outside
        root (a link swapped in after the build). Legacy rows: the absolute path if it exists."""
        if not self.path:
            return None
        if not self.root:
            legacy = Path(self.path)
            return legacy if legacy.is_absolute() and legacy.is_file() else None
        root = Path(os.path.realpath(self.root))
        real = Path(os.path.realpath(root / self.path))
        return real if is_inside(real, root) and real.is_file() else None


@dataclass(frozen=True)
class IndexManifest:
    """What ``unite_index.json`` holds: enough to reopen the store and to encode queries like the corpus."""

    backend: str
    model: str
    settings: dict[str, Any]
    dim: int
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    url: str | None = None
    collection: str = "unite"
    model_fingerprint: str | None = None
    format: int = MANIFEST_FORMAT
    vector_precision: str = "float32"
    calibration: dict[str, Any] | None = None
    rescore_factor: int | None = None

    def __post_init__(self) -> None:
        """``vector_precision``: float32, or int8 / binary codes for a first-stage search over ``rescore_factor * k``
        candidates (``None``: the precision's default, :data:`unite.index.quantized.DEFAULT_RESCORE_FACTORS`)
        rescored with the float32 vectors; ``calibration``: the int8 ranges
        (:meth:`unite.quantization.Calibration.to_dict`), set by the first write when not given."""
        check_vector_precision(self.vector_precision)
        if self.vector_precision != "float32" and self.format < QUANTIZED_FORMAT:
            object.__setattr__(self, "format", QUANTIZED_FORMAT)

    def candidates(self, k: int) -> int:
        """How many first-stage candidates a search for ``k`` results rescores."""
        return k * (self.rescore_factor or default_rescore_factor(self.vector_precision))

    def write(self, folder: Location) -> None:
        """Write whole (locally a temporary file renamed over the old one; a URI's filesystem: one upload)."""
        storage.write_bytes(folder, MANIFEST_FILE, (json.dumps(asdict(self), indent=2) + "\n").encode())


def read_manifest(folder: Location) -> IndexManifest:
    """Read ``DIR/unite_index.json`` (``DIR`` a local folder or a storage URI, :mod:`unite.index.storage`).

    Raises:
        ConfigError: the folder is not an index, or the manifest is malformed (naming the file and field).
    """
    path = storage.join(folder, MANIFEST_FILE)
    try:
        data = json.loads(storage.read_bytes(folder, MANIFEST_FILE))
    except FileNotFoundError:
        raise ConfigError(
            f"{folder}: not a unite index (no {MANIFEST_FILE}); build one with `unite index build`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the index manifest ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    for key, kind in (("backend", str), ("model", str), ("settings", dict), ("dim", int)):
        if not isinstance(data.get(key), kind):
            raise ConfigError(f"{path}: field '{key}' must be a {kind.__name__}, got {data.get(key)!r}")
    if not isinstance(data.get("model_fingerprint"), (str, type(None))):
        raise ConfigError(f"{path}: field 'model_fingerprint' must be a string, got {data['model_fingerprint']!r}")
    _check_quantization_fields(data, path)
    data.setdefault("format", 1)
    if data.get("format", MANIFEST_FORMAT) > QUANTIZED_FORMAT:
        raise ConfigError(f"{path}: format {data['format']} is newer than this unite-embed reads ({QUANTIZED_FORMAT})")
    known = set(IndexManifest.__dataclass_fields__)
    return IndexManifest(**{key: value for key, value in data.items() if key in known})


def _check_quantization_fields(data: dict[str, Any], path: Location) -> None:
    precision = data.get("vector_precision", "float32")
    if not isinstance(precision, str):
        raise ConfigError(f"{path}: field 'vector_precision' must be a string, got {precision!r}")
    try:
        check_vector_precision(precision)
    except ConfigError as error:
        raise ConfigError(f"{path}: field 'vector_precision': {error}") from None
    if not isinstance(data.get("calibration"), (dict, type(None))):
        raise ConfigError(f"{path}: field 'calibration' must be an object, got {type(data['calibration']).__name__}")
    factor = data.get("rescore_factor")
    if factor is not None and (not isinstance(factor, int) or isinstance(factor, bool) or factor < 1):
        raise ConfigError(f"{path}: field 'rescore_factor' must be a positive integer, got {factor!r}")


class VectorStore(abc.ABC):
    """Vectors with their modality and metadata; every write is one atomic commit."""

    manifest: IndexManifest

    @abc.abstractmethod
    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace records by id, in one commit."""

    @abc.abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove records by id (unknown ids are ignored)."""

    @abc.abstractmethod
    def content_hashes(self) -> dict[str, tuple[str, str]]:
        """``{id: (source, content_hash)}`` of every record."""

    @abc.abstractmethod
    def get(self, record_id: str) -> Hit | None:
        """The record with this id (score 0), or ``None``."""

    @abc.abstractmethod
    def search(self, vector: np.ndarray, k: int = 10, modality: int | None = None, exact: bool = False) -> list[Hit]:
        """The ``k`` nearest records by cosine similarity, best first.

        Args:
            vector: (D,) float32 query embedding.
            k: how many hits.
            modality: keep only records whose modality bits equal this (filtered inside the database).
            exact: bypass the approximate index.
        """

    @abc.abstractmethod
    def count(self) -> int:
        """Number of records."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """``{"items": {modality name: count}, "total", "bytes" (on disk, None when unknown), "version"}``."""

    def refresh(self) -> bool:
        """Make later reads see the latest committed data; cheap when nothing changed.

        Returns:
            True when the version that reads see moved.
        """
        return False

    def version(self) -> int | None:
        """The version reads now see (a LanceDB table version), or None for backends without versions."""
        return None

    def optimize(self) -> bool:
        """Compact storage; build the approximate index once the store holds ``ann_threshold`` rows.

        Returns whether an approximate index now exists.
        """
        return False

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release files and connections."""


def _check_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise ConfigError(f"query vector has {vector.shape[0]} dimensions, the index holds {dim}")
    return vector


def check_modality(modality: int | None) -> int | None:
    if modality is None:
        return None
    return int(Modality.parse(modality))


def open_store(folder: Location, api_key: str | None = None) -> VectorStore:
    """Open the index in ``folder`` (a local folder or a storage URI) with the backend its manifest names."""
    folder = _location(folder)
    return _backend(read_manifest(folder), folder, api_key)


def create_store(folder: Location, manifest: IndexManifest, api_key: str | None = None) -> VectorStore:
    """Open the index in ``folder`` (a local folder or a storage URI), creating it when absent.

    Raises:
        ConfigError: the folder holds an index built with another model, encoding settings or backend (a query
            must be encoded the way the corpus was; use a new folder).
    """
    folder = _location(folder)
    if manifest.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {manifest.backend!r}; expected one of {', '.join(BACKENDS)}")
    if storage.exists(folder, MANIFEST_FILE):
        existing = read_manifest(folder)
        check_same_encoding(folder, existing, manifest)
        if manifest.model_fingerprint is None:  # keep what the index knows about its weights
            manifest = replace(manifest, model_fingerprint=existing.model_fingerprint)
        if manifest.calibration is None:  # and the int8 ranges its codes were made with
            manifest = replace(manifest, calibration=existing.calibration)
        elif existing.model_fingerprint is None:
            logger.warning(
                "%s: the index records no weights fingerprint (built before unite-embed recorded one); "
                "recording that of %s",
                folder,
                manifest.model,
            )
        store = _backend(manifest, folder, api_key)
        if asdict(existing) != asdict(manifest):
            manifest.write(folder)
        return store
    store = _backend(manifest, folder, api_key)
    manifest.write(folder)
    return store


def check_same_encoding(folder: Location, existing: IndexManifest, manifest: IndexManifest) -> None:
    """Refuse a build whose manifest differs from the index's (see :func:`manifest_differences`).

    Raises:
        ConfigError: naming every field that differs, with both values.
    """
    differences = manifest_differences(existing, manifest)
    if differences:
        raise ConfigError(
            f"{storage.join(folder, MANIFEST_FILE)}: the index was built with other values: {'; '.join(differences)} "
            "(index vs this build); use the same values or a new --index folder"
        )


def manifest_differences(existing: IndexManifest, manifest: IndexManifest) -> list[str]:
    """What differs between an index's manifest and a build's, as ``name=INDEX vs BUILD`` strings.

    The weights are compared by fingerprint when both sides have one (a moved model folder is the same model),
    else by the recorded model name; settings are compared one by one (``settings.NAME``).
    """
    differences = [
        f"{name}={getattr(existing, name)!r} vs {getattr(manifest, name)!r}"
        for name in ("backend", "dim", "url", "collection", "vector_precision")
        if getattr(existing, name) != getattr(manifest, name)
    ]
    if existing.calibration and manifest.calibration and _ranges(existing) != _ranges(manifest):
        differences.append("calibration=(the ranges the index's int8 codes were made with) vs (other ranges)")
    if existing.model_fingerprint and manifest.model_fingerprint:
        if existing.model_fingerprint != manifest.model_fingerprint:
            differences.append(
                f"model_fingerprint={existing.model_fingerprint[:12]} ({existing.model}) vs "
                f"{manifest.model_fingerprint[:12]} ({manifest.model})"
            )
    elif existing.model != manifest.model:
        differences.append(f"model={existing.model!r} vs {manifest.model!r}")
    missing = object()
    for key in sorted(set(existing.settings) | set(manifest.settings)):
        old, new = existing.settings.get(key, missing), manifest.settings.get(key, missing)
        if old != new:
            shown = ["(absent)" if value is missing else repr(value) for value in (old, new)]
            differences.append(f"settings.{key}={shown[0]} vs {shown[1]}")
    return differences


def _ranges(manifest: IndexManifest) -> tuple[Any, Any]:
    calibration = manifest.calibration or {}
    return calibration.get("min"), calibration.get("max")


def _location(folder: Location) -> Location:
    """A URI as given, anything else as a :class:`~pathlib.Path`."""
    return folder if storage.is_uri(folder) else Path(folder)


def _backend(manifest: IndexManifest, folder: Location, api_key: str | None) -> VectorStore:
    if manifest.backend == "lancedb":
        from unite.index.lance import LanceStore

        return LanceStore(folder, manifest)
    if manifest.backend == "qdrant":
        from unite.index.qdrant import QdrantStore

        return QdrantStore(folder, manifest, api_key=api_key)
    raise ConfigError(f"{storage.join(folder, MANIFEST_FILE)}: unknown backend {manifest.backend!r}")
