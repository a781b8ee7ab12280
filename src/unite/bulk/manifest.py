"""``_manifest.json``: what a folder of shards holds, made with what, and which shards are complete.

```json
{"format": 1, "model": "<name as given or absolute folder>", "model_fingerprint": "<weights_fingerprint>",
 "settings": {EncodingSettings.to_dict()}, "instruction": null, "dim": 1536,
 "versions": {"unite-embed": ..., "torch": ..., "transformers": ..., "pyarrow": ..., ...},
 "shard_size": 10000,
 "sources": [{"source": "<as given>", "path": "<absolute>", "kind": "jsonl"|"parquet", "rows": N, "size": bytes,
              "mtime_ns": ...}],
 "shards": [{"name": "part-00000.parquet", "source": "<as given>", "first_line": 1, "last_line": 10000,
             "rows": 10000, "ok": 9990, "failed": 10, "sha256": "<of the file>", "complete": true}],
 "counts": {"rows": ..., "ok": ..., "failed": ..., "shards": ..., "complete_shards": ...}}
```

Every planned shard is listed from the start; one not yet written has ``complete: false`` and ``ok``, ``failed``
and ``sha256`` null. ``counts.rows`` is the number of input rows of all sources; ``ok`` and ``failed`` count the
rows of complete shards, so ``ok + failed == rows`` once every shard is complete. The manifest is rewritten
atomically after each shard. A shard is complete when the manifest says so and its file's sha256 matches.

A rerun into the same folder must be the same job: same model weights (fingerprint), encoding settings,
instruction, shard size and sources (each source's name, path, kind, rows, size and mtime); anything else is
refused with one line naming what differs, before anything is written. ``versions`` (and the model's name, when
the fingerprint is the same) are recorded, not compared.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from unite.bulk.folder import OutputFolder
from unite.bulk.plan import ShardSpec
from unite.bulk.shards import WrittenShard
from unite.bulk.sources import SourceFile
from unite.errors import ConfigError

__all__ = ["FORMAT", "MANIFEST", "Manifest", "ShardEntry", "check_same_job", "package_versions"]

MANIFEST = "_manifest.json"
FORMAT = 1
#: Distributions whose versions are recorded (absent ones as null).
_PACKAGES = ("unite-embed", "torch", "transformers", "tokenizers", "numpy", "pillow", "av", "pyarrow")


@dataclass
class ShardEntry:
    """One shard as the manifest lists it."""

    name: str
    source: str
    first_line: int
    last_line: int
    rows: int
    ok: int | None = None
    failed: int | None = None
    sha256: str | None = None
    complete: bool = False

    @classmethod
    def planned(cls, spec: ShardSpec) -> ShardEntry:
        return cls(spec.name, spec.source, spec.first_line, spec.last_line, spec.rows)

    def done(self, written: WrittenShard) -> None:
        self.ok, self.failed, self.sha256, self.complete = written.ok, written.failed, written.sha256, True


@dataclass
class Manifest:
    """The manifest of a folder of shards; see the module docstring for the file."""

    model: str
    model_fingerprint: str | None
    settings: dict[str, Any]
    instruction: str | None
    dim: int
    shard_size: int
    sources: list[dict[str, Any]]
    shards: list[ShardEntry]
    versions: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        model: str,
        model_fingerprint: str | None,
        settings: dict[str, Any],
        instruction: str | None,
        dim: int,
        shard_size: int,
        sources: Sequence[SourceFile],
        plan: Sequence[ShardSpec],
    ) -> Manifest:
        """The manifest of a fresh run: every planned shard listed, none complete."""
        return cls(
            model=model,
            model_fingerprint=model_fingerprint,
            settings=_plain(settings),
            instruction=instruction,
            dim=dim,
            shard_size=shard_size,
            sources=[source.to_dict() for source in sources],
            shards=[ShardEntry.planned(spec) for spec in plan],
            versions=package_versions(),
        )

    @property
    def counts(self) -> dict[str, int]:
        complete = [entry for entry in self.shards if entry.complete]
        return {
            "rows": sum(source["rows"] for source in self.sources),
            "ok": sum(entry.ok or 0 for entry in complete),
            "failed": sum(entry.failed or 0 for entry in complete),
            "shards": len(self.shards),
            "complete_shards": len(complete),
        }

    def entry(self, name: str) -> ShardEntry:
        return next(entry for entry in self.shards if entry.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "settings": self.settings,
            "instruction": self.instruction,
            "dim": self.dim,
            "versions": self.versions,
            "shard_size": self.shard_size,
            "sources": self.sources,
            "shards": [asdict(entry) for entry in self.shards],
            "counts": self.counts,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Parse a manifest read from ``where``.

        Raises:
            ConfigError: not a manifest of this format, naming the file and what is wrong.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{where}: not a unite shard manifest of format {FORMAT} (format {found!r})")
        try:
            return cls(
                model=data["model"],
                model_fingerprint=data["model_fingerprint"],
                settings=data["settings"],
                instruction=data["instruction"],
                dim=int(data["dim"]),
                shard_size=int(data["shard_size"]),
                sources=list(data["sources"]),
                shards=[ShardEntry(**entry) for entry in data["shards"]],
                versions=dict(data.get("versions") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{where}: a damaged manifest ({type(error).__name__}: {error})") from None

    # ------------------------------------------------------------------------------------------------- files

    @classmethod
    def read(cls, folder: OutputFolder) -> Manifest | None:
        """The folder's manifest, or None when it has none."""
        if not folder.exists(MANIFEST):
            return None
        where = folder.uri(MANIFEST)
        try:
            data = json.loads(folder.read_bytes(MANIFEST).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{where}: not JSON ({error})") from None
        return cls.from_dict(data, where)

    def write(self, folder: OutputFolder) -> None:
        """Rewrite the folder's manifest atomically."""
        folder.write_atomically(MANIFEST, (json.dumps(self.to_dict(), indent=1) + "\n").encode("utf-8"))

    def verified_complete(self, folder: OutputFolder) -> set[str]:
        """Names of the shards listed complete whose file is present with the recorded sha256; the others are
        marked incomplete here (their files will be written again)."""
        present = set(folder.names())
        complete = set()
        for entry in self.shards:
            if entry.complete and entry.name in present and folder.sha256(entry.name) == entry.sha256:
                complete.add(entry.name)
            elif entry.complete:
                entry.ok = entry.failed = entry.sha256 = None
                entry.complete = False
        return complete


def check_same_job(existing: Manifest, current: Manifest, where: str, compare_model: bool = True) -> None:
    """Refuse to add to ``existing`` the shards of a different job.

    Args:
        existing: the folder's manifest.
        current: this run's.
        where: the manifest's location, for the message.
        compare_model: also compare the model's fingerprint, dim and settings (False to check the inputs
            before the model is loaded).

    Raises:
        ConfigError: one line naming every difference (model, settings, instruction, shard size, sources).
    """
    differences = _input_differences(existing, current)
    if compare_model:
        differences += _model_differences(existing, current)
    if differences:
        raise ConfigError(
            f"{where} holds shards of another job: {'; '.join(differences)}; nothing was written (rerun with the "
            "same model, settings and inputs, or use another --output folder)"
        )


def package_versions() -> dict[str, str | None]:
    """Python's and the versions of the packages that decide the embeddings or the files."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ------------------------------------------------------------------------------------------------ internals


def _model_differences(existing: Manifest, current: Manifest) -> list[str]:
    out = []
    if existing.model_fingerprint != current.model_fingerprint or (
        existing.model_fingerprint is None and existing.model != current.model
    ):
        out.append(
            f"model {existing.model} (fingerprint {_short(existing.model_fingerprint)}) there, "
            f"{current.model} (fingerprint {_short(current.model_fingerprint)}) now"
        )
    elif existing.dim != current.dim:
        out.append(f"dim {existing.dim} there, {current.dim} now")
    changed = [
        f"{key} {existing.settings.get(key)!r} there, {current.settings.get(key)!r} now"
        for key in sorted(set(existing.settings) | set(current.settings))
        if existing.settings.get(key) != current.settings.get(key)
    ]
    if changed:
        out.append("settings differ: " + ", ".join(changed))
    return out


def _input_differences(existing: Manifest, current: Manifest) -> list[str]:
    out = []
    if existing.instruction != current.instruction:
        out.append(f"instruction {existing.instruction!r} there, {current.instruction!r} now")
    if existing.shard_size != current.shard_size:
        out.append(f"shard size {existing.shard_size} there, {current.shard_size} now")
    before = [source.get("source") for source in existing.sources]
    now = [source["source"] for source in current.sources]
    if before != now:
        out.append(f"sources {', '.join(map(str, before))} there, {', '.join(now)} now")
        return out
    for old, new in zip(existing.sources, current.sources):
        changed = [f"{key} {old.get(key)!r} -> {new[key]!r}" for key in new if old.get(key) != new[key]]
        if changed:
            out.append(f"source {new['source']} changed ({', '.join(changed)})")
    return out


def _short(fingerprint: str | None) -> str:
    return "none" if fingerprint is None else fingerprint[:12]


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """The dict as JSON gives it back (tuples as lists, ...), so a fresh one compares equal to one read back."""
    return json.loads(json.dumps(value))
