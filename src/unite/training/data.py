"""Training pairs: the released formats, several weighted sources, and a bounded bad-record policy."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from unite.data.collator import Features, ItemProcessor
from unite.data.jsonl import holds_json_array, read_json_file, read_json_lines, validate_id
from unite.errors import ConfigError, InputError, UniteError
from unite.types import Item, Modality

logger = logging.getLogger(__name__)

__all__ = [
    "BadRecords",
    "PairCollator",
    "PairDataset",
    "PairRecord",
    "PlannedSampler",
    "TrainSource",
    "parse_record",
    "read_source",
]

_UNITE_KEYS = {"query", "candidate", "negative", "target_modal", "target_modality", "id"}
_MMEB_KEYS = {"qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path"}
_MMEB_PLACEHOLDER = re.compile(r"<\|image_\d+\|>")


@dataclass(frozen=True)
class PairRecord:
    """One training pair: a query, its positive candidate, hard negatives, and the pair's target modality."""

    query: Item
    candidate: Item
    negatives: tuple[Item, ...]
    target_modality: Modality
    id: str
    source: str


@dataclass(frozen=True)
class TrainSource:
    """A training file with its sampling weight or target share.

    Attributes:
        path: a JSON list or JSON lines file of UNITE pairs or MMEB-train records.
        weight: each epoch draws ``weight * len(source)`` records (1.0: every record once).
        share: alternatively, the fraction of each epoch drawn from this source.
        name: for logs (default: the file name).
        format: ``unite``, ``mmeb`` or ``auto`` (by the keys of the first record).
        media_root: folder of the source's media, overriding the run's ``media_root``.
    """

    path: str
    weight: float | None = None
    share: float | None = None
    name: str | None = None
    format: str = "auto"
    media_root: str | None = None

    @classmethod
    def parse(cls, value: Any) -> TrainSource:
        if isinstance(value, (str, Path)):
            return cls(str(value))
        if not isinstance(value, Mapping) or "path" not in value:
            raise ConfigError(f"a train_data entry must be a path or {{path, weight|share, ...}}, got {value!r}")
        unknown = set(value) - {"path", "weight", "share", "name", "format", "media_root"}
        if unknown:
            raise ConfigError(f"train_data entry {value['path']}: unknown key(s) {', '.join(sorted(unknown))}")
        source = cls(**{key: value[key] for key in value})
        if source.weight is not None and source.share is not None:
            raise ConfigError(f"train_data entry {source.path}: give a weight or a share, not both")
        if source.format not in ("auto", "unite", "mmeb"):
            raise ConfigError(f"train_data entry {source.path}: format must be auto, unite or mmeb")
        for number in (source.weight, source.share):
            if number is not None and number < 0:
                raise ConfigError(f"train_data entry {source.path}: weights and shares must not be negative")
        return source

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


@dataclass
class BadRecords:
    """Records skipped under ``on_bad_record="skip"``: where and why. Counted and reported, never replaced."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        logger.warning("skipping %s: %s", where, reason)
        self.entries.append({"record": where, "error": reason})

    def __len__(self) -> int:
        return len(self.entries)

    def write(self, path: str | Path) -> None:
        Path(path).write_text("".join(json.dumps(entry) + "\n" for entry in self.entries))


def _side(data: Any, media_root: Path, where: str, side: str) -> Item:
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: '{side}' must be an object with text/image/video, got {type(data).__name__}")
    try:
        return Item.from_dict(data, base_dir=media_root)
    except InputError as error:
        raise InputError(f"{where}: '{side}': {error}") from None


def parse_record(data: Any, media_root: Path, where: str, source: str, fmt: str = "auto") -> PairRecord:
    """Turn one JSON record into a :class:`PairRecord`, or raise :class:`InputError` naming ``where``."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: a record must be a JSON object, got {type(data).__name__}")
    if fmt == "auto":
        fmt = "mmeb" if "qry" in data or "pos_text" in data else "unite"
    return (
        _parse_mmeb(data, media_root, where, source) if fmt == "mmeb" else _parse_unite(data, media_root, where, source)
    )


def _parse_unite(data: Mapping[str, Any], media_root: Path, where: str, source: str) -> PairRecord:
    unknown = set(data) - _UNITE_KEYS
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(_UNITE_KEYS))}"
        )
    for key in ("query", "candidate"):
        if key not in data:
            raise InputError(f"{where}: missing '{key}'")
    query = _side(data["query"], media_root, where, "query")
    candidate = _side(data["candidate"], media_root, where, "candidate")
    raw_negatives = data.get("negative") or []
    if isinstance(raw_negatives, Mapping):
        raw_negatives = [raw_negatives]
    if not isinstance(raw_negatives, list):
        raise InputError(f"{where}: 'negative' must be an object or a list of objects")
    negatives = tuple(_side(n, media_root, where, "negative") for n in raw_negatives)
    target = data.get("target_modality", data.get("target_modal"))
    try:
        modality = candidate.modality if target is None else Modality.parse(target)
    except InputError as error:
        raise InputError(f"{where}: target_modal: {error}") from None
    return PairRecord(query, candidate, negatives, modality, _record_id(data, where), source)


def _mmeb_side(text: Any, image: Any, media_root: Path, where: str, side: str) -> Item | None:
    if text is not None and not isinstance(text, str):
        raise InputError(f"{where}: '{side}' text must be a string")
    if image is not None and not isinstance(image, str):
        raise InputError(f"{where}: '{side}' image path must be a string")
    text = _MMEB_PLACEHOLDER.sub("<|IMAGE|>", text or "")
    if not text.strip() and not image:
        return None
    data = {"text": text} if text.strip() else {}
    if image:
        data["image"] = image
    if "<|IMAGE|>" in text and not image:
        raise InputError(f"{where}: '{side}' has an image placeholder but no image path")
    if image and "<|IMAGE|>" not in text and text.strip():
        data["text"] = "<|IMAGE|>\n" + text
    return _side(data, media_root, where, side)


def _parse_mmeb(data: Mapping[str, Any], media_root: Path, where: str, source: str) -> PairRecord:
    unknown = set(data) - _MMEB_KEYS - {"id"}
    if unknown:
        raise InputError(f"{where}: unknown MMEB key(s) {', '.join(sorted(unknown))}")
    query = _mmeb_side(data.get("qry"), data.get("qry_image_path"), media_root, where, "qry")
    candidate = _mmeb_side(data.get("pos_text"), data.get("pos_image_path"), media_root, where, "pos")
    if query is None or candidate is None:
        raise InputError(f"{where}: an MMEB record needs a query (qry/qry_image_path) and a positive (pos_*)")
    negative = _mmeb_side(data.get("neg_text"), data.get("neg_image_path"), media_root, where, "neg")
    negatives = (negative,) if negative else ()
    return PairRecord(query, candidate, negatives, candidate.modality, _record_id(data, where), source)


def _record_id(data: Mapping[str, Any], where: str) -> str:
    """The record's ``id`` as a string (a string or an integer in the file), else ``where``."""
    if "id" not in data:
        return where
    try:
        return str(validate_id(data["id"]))
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def read_source(source: TrainSource, media_root: str | Path, on_bad_record: str, bad: BadRecords) -> list[PairRecord]:
    """Every valid record of one source; bad ones raise or are added to ``bad`` (``on_bad_record="skip"``).

    JSON lines go through :func:`unite.data.jsonl.read_json_lines` (bytes per line, BOM stripped, any parse
    failure that line's ``FILE:LINE`` error); a JSON array file (first character ``[``) is read whole.
    """
    path = Path(source.path)
    root = Path(source.media_root or media_root or path.parent)
    if not path.exists():
        raise ConfigError(f"{path}: training file not found")
    records: list[PairRecord] = []
    for where, data, error in _raw_records(path):
        if error is not None:
            _bad(on_bad_record, bad, where, str(error))
            continue
        try:
            records.append(parse_record(data, root, where, source.label, source.format))
        except UniteError as error:
            _bad(on_bad_record, bad, where, str(error))
        except Exception as error:  # the last guard of this edge: one record cannot stop the run unnamed
            _bad(on_bad_record, bad, where, f"{where}: internal error: {type(error).__name__}: {error}")
    if not records:
        raise ConfigError(f"{path}: no usable training records")
    return records


def _raw_records(path: Path) -> Iterator[tuple[str, Any, InputError | None]]:
    """(where, parsed record, error) of every record; the file is opened now.

    Raises:
        ConfigError: the file cannot be read, or a JSON array file is not valid JSON as a whole.
    """
    try:
        if holds_json_array(path):
            data = read_json_file(path)
            return ((f"{path}[{index}]", record, None) for index, record in enumerate(data))
        lines = read_json_lines(path)
    except InputError as error:
        raise ConfigError(str(error)) from None
    return ((f"{path}:{line.number}", line.value, line.error) for line in lines if not line.blank)


def _bad(policy: str, bad: BadRecords, where: str, reason: str) -> None:
    if policy == "raise":
        raise InputError(reason)
    bad.add(where, reason)


def stable_id(text: str) -> int:
    """A 63-bit integer id of a record id string, equal on every rank."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


class PairDataset(Dataset):
    """All records of several sources; which ones an epoch uses is decided by :class:`PlannedSampler`.

    ``__getitem__`` loads the media and tokenizes both sides; with ``on_bad_record="skip"`` a record whose media
    fail returns ``None`` (the collator drops it and the skip is counted), never another record instead.
    """

    def __init__(
        self,
        sources: list[TrainSource],
        processor: ItemProcessor,
        media_root: str | Path | None = None,
        on_bad_record: str = "raise",
        use_negatives: bool = True,
    ) -> None:
        if on_bad_record not in ("raise", "skip"):
            raise ConfigError(f"on_bad_record must be raise or skip, got {on_bad_record!r}")
        if not sources:
            raise ConfigError("train_data lists no source")
        self.sources = sources
        self.processor = processor
        self.on_bad_record = on_bad_record
        self.use_negatives = use_negatives
        self.bad = BadRecords()
        self.records: list[PairRecord] = []
        self.offsets: list[int] = []
        for source in sources:
            self.offsets.append(len(self.records))
            self.records.extend(read_source(source, media_root or "", on_bad_record, self.bad))
        self.sizes = [end - start for start, end in zip(self.offsets, [*self.offsets[1:], len(self.records)])]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        try:
            negatives = record.negatives if self.use_negatives else ()
            return {
                "query": self.processor.prepare(record.query),
                "candidate": self.processor.prepare(record.candidate),
                "negatives": [self.processor.prepare(item) for item in negatives],
                "id": stable_id(record.id),
                "target_modality": int(record.target_modality),
                "source": record.source,
            }
        except Exception as error:  # any failure of one record is that record's: skipped or raised, named
            if not isinstance(error, UniteError):
                error = InputError(f"internal error while preparing the record: {type(error).__name__}: {error}")
            if self.on_bad_record == "raise":
                raise type(error)(f"{record.id}: {error}") from error
            self.bad.add(record.id, str(error))
            return None

    def plan(self, epoch: int, seed: int) -> list[int]:
        """Record indices of one epoch, in source order: each source drawn by its weight or share."""
        rng = np.random.default_rng([seed, epoch])
        counts = self._counts()
        planned: list[int] = []
        for offset, size, count in zip(self.offsets, self.sizes, counts):
            full, rest = divmod(count, size)
            draws = [rng.permutation(size) for _ in range(full)]
            if rest:
                draws.append(rng.permutation(size)[:rest])
            planned.extend(int(offset + i) for draw in draws for i in draw)
        return planned

    def _counts(self) -> list[int]:
        shares = [source.share for source in self.sources]
        if any(share is not None for share in shares):
            if not all(share is not None for share in shares):
                raise ConfigError("give every train_data source a share, or none (weights then)")
            total = sum(shares)
            if total <= 0:
                raise ConfigError("train_data shares add up to zero")
            epoch = len(self.records)
            return [round(epoch * share / total) for share in shares]
        weights = [1.0 if source.weight is None else source.weight for source in self.sources]
        return [round(size * weight) for size, weight in zip(self.sizes, weights)]

    def modality_share(self, indices: list[int]) -> dict[str, float]:
        """Share of each target modality (``text``, ``image``, ``text,image``, ...) among ``indices``."""
        counts = Counter(_modality_name(self.records[i].target_modality) for i in indices)
        total = max(1, len(indices))
        return {name: count / total for name, count in sorted(counts.items())}


def _modality_name(modality: Modality) -> str:
    return ",".join(
        name
        for flag, name in ((Modality.TEXT, "text"), (Modality.IMAGE, "image"), (Modality.VIDEO, "video"))
        if flag in modality
    )


class PlannedSampler(Sampler[int]):
    """Yields an epoch's planned records, shuffled, or grouped into batches of one source or one target modality.

    Deterministic in (seed, epoch), so a resumed run sees the same order. ``group_by`` ``source`` or
    ``modality`` keeps every batch of ``batch_size`` consecutive indices within one group (a group's remainder
    that does not fill a batch is left out of that epoch).
    """

    def __init__(self, dataset: PairDataset, seed: int, batch_size: int, group_by: str = "none") -> None:
        if group_by not in ("none", "source", "modality"):
            raise ConfigError(f"sampler must be random, by_source or by_modality, got {group_by!r}")
        self.dataset = dataset
        self.seed = seed
        self.batch_size = batch_size
        self.group_by = group_by
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        planned = self.dataset.plan(self.epoch, self.seed)
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        if self.group_by == "none":
            return [planned[i] for i in rng.permutation(len(planned))]
        key = (
            (lambda i: self.dataset.records[i].source)
            if self.group_by == "source"
            else (lambda i: int(self.dataset.records[i].target_modality))
        )
        groups: dict[Any, list[int]] = {}
        for index in planned:
            groups.setdefault(key(index), []).append(index)
        batches = []
        for members in groups.values():
            members = [members[i] for i in rng.permutation(len(members))]
            usable = len(members) - len(members) % self.batch_size
            batches.extend(members[start : start + self.batch_size] for start in range(0, usable, self.batch_size))
        return [index for b in rng.permutation(len(batches)) for index in batches[b]]

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        logger.info(
            "epoch %d: %d pairs, target modality share %s", self.epoch, len(order), self.dataset.modality_share(order)
        )
        return iter(order)

    def __len__(self) -> int:
        return len(self.order()) if self.group_by != "none" else sum(self.dataset._counts())


class PairCollator:
    """Examples to a training batch: per-side feature lists (collated later, whole or in GradCache chunks)."""

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any]:
        kept = [example for example in examples if example is not None]
        negatives: list[Features] = []
        owners: list[int] = []
        for row, example in enumerate(kept):
            negatives.extend(example["negatives"])
            owners.extend([row] * len(example["negatives"]))
        return {
            "query": [example["query"] for example in kept],
            "candidate": [example["candidate"] for example in kept],
            "negative": negatives,
            "negative_owner": torch.tensor(owners, dtype=torch.long),
            "ids": torch.tensor([example["id"] for example in kept], dtype=torch.long),
            "target_modality": torch.tensor([example["target_modality"] for example in kept], dtype=torch.long),
            "skipped": len(examples) - len(kept),
            "sources": [example["source"] for example in kept],
        }
