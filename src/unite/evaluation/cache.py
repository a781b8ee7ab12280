"""On-disk embedding cache keyed by content: the item, the checkpoint's weights and the encoding settings.

Layout: ``CACHE/<namespace>/shard-*.npz``, each shard holding ``keys`` (hex digests of items) and
``embeddings`` (float32 rows). The namespace is a digest of the checkpoint's weights, the model dtype and
every encoding setting, so a changed setting never reuses stale vectors. Shards are written atomically after
every chunk of items, so an interrupted run keeps what it finished and the next run resumes from there.
Shards written by several ranks (``torchrun``) live side by side.

Items that cannot be encoded are never cached (a rerun tries them again). Each rank lists its failures of a task in
``failures-<task>-rank<r>.json`` beside the shards, so that rank 0 can report them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unite.settings import EncodingSettings
from unite.types import Item, VideoClip

__all__ = ["EmbeddingCache", "checkpoint_fingerprint", "item_key", "namespace_key"]

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}
_BLOCK = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return "missing:" + str(path)
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def _source_digest(source: Any) -> Any:
    if isinstance(source, VideoClip):  # the file's bytes and the time range taken from it
        return {"clip": _source_digest(source.path), "start": float(source.start), "end": float(source.end)}
    if isinstance(source, (list, tuple)):
        return [_source_digest(frame) for frame in source]
    if isinstance(source, (str, Path)):
        text = str(source)
        return text if text.startswith(("http://", "https://")) else file_digest(text)
    array = np.asarray(source)
    return "array:" + hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def item_key(item: Item) -> str:
    """A digest of what the model sees of ``item``: text, instruction and the bytes of every image and video."""
    content = {
        "text": item.text,
        "instruction": item.instruction,
        "images": [_source_digest(source) for source in item.images],
        "videos": [_source_digest(source) for source in item.videos],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:40]


_FINGERPRINTS: dict[int, str] = {}
#: Tensors the embedding never uses: the language-model head (the embedding is a hidden state). It is left out
#: because after loading a tied checkpoint it may hold uninitialised memory, which would change the digest.
_NOT_EMBEDDING_PATH = ("lm_head.",)


def checkpoint_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer on the embedding path of ``model``: names, dtypes, shapes, bytes.

    The weights themselves are hashed, so a checkpoint is recognised wherever it was loaded from. Remembered per
    model object (a 2B model takes a few seconds).
    """
    key = id(model)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            if name.startswith(_NOT_EMBEDDING_PATH):
                continue
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
            digest.update(memoryview(flat))
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def namespace_key(fingerprint: str, settings: EncodingSettings, dtype: str) -> str:
    """The cache namespace of one checkpoint, dtype and set of encoding settings."""
    description = json.dumps(
        {"checkpoint": fingerprint, "dtype": dtype, "settings": settings.to_dict()}, sort_keys=True
    )
    return hashlib.sha256(description.encode()).hexdigest()[:24]


class EmbeddingCache:
    """Embeddings of items already encoded under one namespace; ``folder=None`` keeps them in memory only.

    Args:
        folder: the cache root, or ``None``.
        namespace: see :func:`namespace_key`.
        description: written once as ``info.json`` beside the shards, for people looking at the folder.
    """

    def __init__(self, folder: str | Path | None, namespace: str, description: dict[str, Any] | None = None) -> None:
        self.folder = None if folder is None else Path(folder) / namespace
        self.rows: dict[str, np.ndarray] = {}
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "info.json"
        if description is not None and not info.exists():
            _atomic_write(info, json.dumps(description, indent=2, default=str).encode())
        self.reload()

    def reload(self) -> None:
        """Read every shard (those other ranks wrote included); unreadable leftovers are skipped."""
        if self.folder is None:
            return
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard) as data:
                    self.rows.update(zip(data["keys"].tolist(), data["embeddings"]))
            except (OSError, ValueError, KeyError):
                continue

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, keys: list[str]) -> np.ndarray:
        """(len(keys), D) float32 rows; every key must be present."""
        return np.stack([self.rows[key] for key in keys]).astype(np.float32, copy=False)

    def put(self, keys: list[str], embeddings: np.ndarray) -> None:
        """Remember rows and, with a folder, write them as one new shard atomically."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        self.rows.update(zip(keys, embeddings))
        if self.folder is None or not keys:
            return
        path = self.folder / f"shard-{uuid.uuid4().hex}.npz"
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as handle:
            np.savez(handle, keys=np.asarray(keys), embeddings=embeddings)
        temporary.replace(path)

    def write_failures(self, task: str, rank: int, failures: dict[str, str]) -> None:
        """Record ``failures`` (item key -> reason) of ``task`` on ``rank``, replacing that rank's earlier list."""
        if self.folder is not None:
            _atomic_write(self.folder / f"{_FAILURES}{task}-rank{rank}.json", json.dumps(failures).encode())

    def read_failures(self, task: str, world_size: int) -> dict[str, str]:
        """The failures ranks ``0 .. world_size - 1`` recorded for ``task`` (item key -> reason); a missing or
        unreadable list counts as empty."""
        failures: dict[str, str] = {}
        if self.folder is None:
            return failures
        for rank in range(world_size):
            try:
                data = json.loads((self.folder / f"{_FAILURES}{task}-rank{rank}.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                failures.update({str(key): str(reason) for key, reason in data.items()})
        return failures


_FAILURES = "failures-"


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
