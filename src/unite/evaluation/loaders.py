"""Loaders: each public file layout becomes one internal form, :class:`TaskData`.

Pair layouts (an image or video with one or several captions) go through :func:`pairs_to_task`, which builds
either direction: text queries against the media (each caption's one relevant item), or media queries against
every caption (all captions of the item are relevant; recall@k counts a query as found when any of them is in
the first k, as the benchmarks define it).
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from unite.data.jsonl import read_item_lines, read_json_file, read_json_lines, read_text_lines
from unite.errors import ConfigError, InputError
from unite.evaluation.locate import candidates, find
from unite.evaluation.tasks import Direction, Layout, TaskSpec
from unite.settings import parse_enum
from unite.types import VIDEO_EXTENSIONS, Item, VideoClip, check_unicode

__all__ = ["MISSING_MEDIA_POLICIES", "Entry", "Pair", "TaskData", "load_task_data", "pairs_to_task"]

#: ``options.missing_media`` of a task spec: fail before the model loads (default), or skip the items.
MISSING_MEDIA_RAISE, MISSING_MEDIA_DROP = "raise", "drop"
MISSING_MEDIA_POLICIES = (MISSING_MEDIA_RAISE, MISSING_MEDIA_DROP)


@dataclass(frozen=True)
class Entry:
    """A query or candidate: its id and the item to embed."""

    id: str
    item: Item


@dataclass(frozen=True)
class Pair:
    """One image or video (a path) with its captions, as the pair layouts hold them."""

    id: str
    media: str
    captions: tuple[str, ...]


@dataclass
class TaskData:
    """A task in the internal form: queries, candidates, graded judgements, optional per-query pools.

    Attributes:
        queries: entries in file order.
        corpus: every candidate once (pools refer to them by id).
        qrels: query id -> candidate id -> grade (above 0 is relevant).
        pools: query id -> the candidate ids it is ranked against (MMEB); ``None``: the whole corpus.
        source: the files it came from, for messages.
        dropped_queries: ids of queries without a relevant candidate in the files (never scored).
        skipped: ``(role, id, reason)`` of every query (``"query"``) and candidate (``"candidate"``) left out
            because it cannot be used (a missing media file, an item that cannot be encoded), reason on one line.
        excluded: query id -> candidate ids never ranked for it (WebVid-CoVR: the query's own source video when it
            is another query's target); they score ``-inf``, below every other candidate.
        candidate_groups: candidate id -> group key; when set, each query ranks groups, a group scoring the best
            of its members (video-to-text with several captions per video, as CLIP4Clip ranks videos); a
            candidate missing from the mapping is a group of its own.
        protocol: what the loader applied of the benchmark's protocol (files read, captions kept per item,
            caption rule, instruction columns used), recorded with each result.
    """

    queries: list[Entry]
    corpus: list[Entry]
    qrels: dict[str, dict[str, int]]
    pools: dict[str, list[str]] | None = None
    source: str = ""
    dropped_queries: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    candidate_groups: dict[str, str] | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TaskData:
        """Check ids: unique, judgements and pools point at known ids; queries without judgements are dropped.

        Raises:
            ConfigError: a duplicate id, or a judgement or pool naming an unknown id.
        """
        query_ids = _unique([entry.id for entry in self.queries], "query", self.source)
        corpus_ids = _unique([entry.id for entry in self.corpus], "candidate", self.source)
        for query_id, judged in self.qrels.items():
            if query_id not in query_ids:
                raise ConfigError(f"{self.source}: judgements name query id {query_id!r}, which is not a query")
            unknown = [cid for cid in judged if cid not in corpus_ids]
            if unknown:
                raise ConfigError(
                    f"{self.source}: judgements of query {query_id!r} name candidate id {unknown[0]!r}, "
                    "which is not in the corpus"
                )
        for query_id, pool in (self.pools or {}).items():
            unknown = [cid for cid in pool if cid not in corpus_ids]
            if query_id not in query_ids or unknown:
                raise ConfigError(f"{self.source}: the pool of query {query_id!r} names unknown ids")
            if not any(self.qrels.get(query_id, {}).get(cid, 0) > 0 for cid in pool):
                raise ConfigError(f"{self.source}: the pool of query {query_id!r} holds no relevant candidate")
        self._check_scoring_rules(query_ids, corpus_ids)
        judged = [e for e in self.queries if any(grade > 0 for grade in self.qrels.get(e.id, {}).values())]
        self.dropped_queries += [e.id for e in self.queries if e not in judged]
        self.queries = judged
        if not self.queries:
            raise ConfigError(f"{self.source}: no query has a relevant candidate")
        return self

    def _check_scoring_rules(self, query_ids: set[str], corpus_ids: set[str]) -> None:
        """Exclusions and candidate groups name known ids; no query excludes a candidate it judges relevant."""
        for query_id, excluded in self.excluded.items():
            unknown = [cid for cid in excluded if cid not in corpus_ids]
            if query_id not in query_ids or unknown:
                raise ConfigError(f"{self.source}: the exclusions of query {query_id!r} name unknown ids")
            relevant = [cid for cid in excluded if self.qrels.get(query_id, {}).get(cid, 0) > 0]
            if relevant:
                raise ConfigError(
                    f"{self.source}: query {query_id!r} excludes {relevant[0]!r}, which it judges relevant"
                )
        if self.candidate_groups is not None:
            unknown = [cid for cid in self.candidate_groups if cid not in corpus_ids]
            if unknown:
                raise ConfigError(f"{self.source}: candidate groups name unknown candidate id {unknown[0]!r}")
            if self.pools is not None:
                raise ConfigError(f"{self.source}: candidate groups and per-query pools cannot be combined")

    def limited(self, count: int | None) -> TaskData:
        """The first ``count`` queries, with the candidates they judge or pool plus the first ``count`` others.

        A smoke test: the numbers are not comparable with a full run.
        """
        if count is None or count >= len(self.queries):
            return self
        queries = self.queries[:count]
        keep = {cid for e in queries for cid in self.qrels.get(e.id, {})}
        keep |= {cid for e in queries for cid in (self.pools or {}).get(e.id, [])}
        keep |= {entry.id for entry in self.corpus[:count]}
        return self._keeping(queries, [entry for entry in self.corpus if entry.id in keep], self.qrels, self.pools, [])

    def _keeping(
        self,
        queries: list[Entry],
        corpus: list[Entry],
        qrels: dict[str, dict[str, int]],
        pools: dict[str, list[str]] | None,
        skipped: list[tuple[str, str, str]],
    ) -> TaskData:
        """A copy holding ``queries`` and ``corpus``: judgements, pools, exclusions and candidate groups keep only
        what names them; ``skipped`` is added to the skipped list."""
        query_ids, corpus_ids = {e.id for e in queries}, {e.id for e in corpus}
        groups = self.candidate_groups
        return dataclasses.replace(
            self,
            queries=queries,
            corpus=corpus,
            qrels={qid: judged for qid, judged in qrels.items() if qid in query_ids},
            pools=None if pools is None else {qid: pool for qid, pool in pools.items() if qid in query_ids},
            excluded={
                qid: [cid for cid in excluded if cid in corpus_ids]
                for qid, excluded in self.excluded.items()
                if qid in query_ids
            },
            candidate_groups=None if groups is None else {c: g for c, g in groups.items() if c in corpus_ids},
            dropped_queries=list(self.dropped_queries),
            skipped=[*self.skipped, *skipped],
        )

    def without(self, skipped: Iterable[tuple[str, str, str]]) -> TaskData:
        """A copy without the queries and candidates of ``skipped`` (``(role, id, reason)`` each, role ``"query"``
        or ``"candidate"``), which are added to its ``skipped`` list.

        A skipped candidate leaves the corpus, every judgement and every pool; a query left without a relevant
        candidate is skipped too, its reason naming the skipped candidates it judged relevant.
        """
        added = [(role, str(item_id), _one_line(reason)) for role, item_id, reason in skipped]
        gone = {role: {item_id for kind, item_id, _ in added if kind == role} for role in ("query", "candidate")}
        unknown = {role for role, _, _ in added} - set(gone)
        if unknown:
            raise ValueError(f"skipped roles must be 'query' or 'candidate', got {sorted(unknown)}")
        qrels = {
            query_id: {cid: grade for cid, grade in judged.items() if cid not in gone["candidate"]}
            for query_id, judged in self.qrels.items()
        }
        pools = None
        if self.pools is not None:
            pools = {qid: [cid for cid in pool if cid not in gone["candidate"]] for qid, pool in self.pools.items()}
        queries = []
        for entry in (e for e in self.queries if e.id not in gone["query"]):
            if _has_relevant(qrels.get(entry.id, {}), None if pools is None else pools.get(entry.id, [])):
                queries.append(entry)
            else:
                lost = [cid for cid, grade in self.qrels.get(entry.id, {}).items() if grade > 0]
                shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
                added.append(("query", entry.id, f"every relevant candidate was skipped ({shown})"))
        corpus = [entry for entry in self.corpus if entry.id not in gone["candidate"]]
        return self._keeping(queries, corpus, qrels, pools, added)

    def media_paths(self) -> list[str]:
        """Every local media path the items name (frames of frame lists included), in order, once."""
        paths: dict[str, None] = {}
        for entry in [*self.queries, *self.corpus]:
            paths.update(dict.fromkeys(_local_paths(entry.item)))
        return list(paths)

    def _naming(self, absent: set[str]) -> list[tuple[str, str, str]]:
        """``(role, id, reason)`` of every query and candidate that names one of the ``absent`` files."""
        named = []
        for role, entries in (("query", self.queries), ("candidate", self.corpus)):
            for entry in entries:
                gone = [path for path in _local_paths(entry.item) if path in absent]
                if gone:
                    named.append((role, entry.id, f"media file not found: {gone[0]}"))
        return named

    def check_media(self, missing_media: str = MISSING_MEDIA_RAISE, shown: int = 3) -> TaskData:
        """Look for every local media file before any model is loaded.

        Args:
            missing_media: ``"raise"`` (the default: a wrong layout fails at once) or ``"drop"``: the queries and
                candidates naming a missing file are left out and listed in ``skipped`` (see :meth:`without`).
            shown: how many missing files the error names.

        Returns:
            ``self`` when nothing is missing, else (``"drop"``) a copy without the items that name missing files.

        Raises:
            ConfigError: a missing file under ``"raise"``; under ``"drop"``, when no query is left to score or
                the policy is unknown.
        """
        if missing_media not in MISSING_MEDIA_POLICIES:
            raise ConfigError(
                f"{self.source}: options.missing_media must be one of {', '.join(MISSING_MEDIA_POLICIES)}, "
                f"got {missing_media!r}"
            )
        missing = [path for path in self.media_paths() if not Path(path).is_file()]
        if not missing:
            return self
        if missing_media == MISSING_MEDIA_RAISE:
            examples = ", ".join(missing[:shown])
            raise ConfigError(
                f"{self.source}: {len(missing)} media file(s) not found, e.g. {examples} "
                f"(options: {{missing_media: drop}} in the task spec skips the items that name them)"
            )
        kept = self.without(self._naming(set(missing)))
        if not kept.queries:
            raise ConfigError(f"{self.source}: no query is left to score: {len(missing)} media file(s) not found")
        return kept


def _local_paths(item: Item) -> list[str]:
    """The local media paths ``item`` names (frames of frame lists included), in order."""
    paths = []
    for source in [*item.images, *item.videos]:
        for value in source if isinstance(source, list) else [source]:
            value = value.path if isinstance(value, VideoClip) else value  # a time range of a file
            if isinstance(value, (str, Path)) and not str(value).startswith(("http://", "https://")):
                paths.append(str(value))
    return paths


def _has_relevant(judged: dict[str, int], pool: list[str] | None) -> bool:
    """Whether a query judging ``judged`` has a relevant candidate left (within its ``pool`` when it has one)."""
    inside = None if pool is None else set(pool)
    return any(grade > 0 and (inside is None or cid in inside) for cid, grade in judged.items())


def _one_line(reason: object, limit: int = 400) -> str:
    """``reason`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_task_data(spec: TaskSpec, folder: str | Path) -> TaskData:
    """Load the files of ``spec`` from ``folder`` with its layout's loader, validated.

    Raises:
        ConfigError: a missing file (named with its ``files`` role) or inconsistent ids.
        InputError: a malformed line or record, named by file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"task {spec.name}: data folder {folder} not found")
    return LOADERS[spec.layout](spec, folder).validate()


# ------------------------------------------------------------------------------------------------ helpers


def _file(spec: TaskSpec, folder: Path, role: str, default: str | Sequence[str]) -> Path:
    """The file of ``role``: the first of its candidate paths that exists (see :mod:`unite.evaluation.locate`)."""
    return find(spec.name, folder, role, candidates(spec.files.get(role), default), "file")


def _dir(spec: TaskSpec, folder: Path, role: str, default: str | Sequence[str]) -> Path:
    """The folder of ``role`` (media, captions): the first candidate that exists, zips extracted once."""
    return find(spec.name, folder, role, candidates(spec.files.get(role), default), "dir")


def _unique(ids: list[str], kind: str, source: str) -> set[str]:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ConfigError(f"{source}: duplicate {kind} id {value!r}")
        seen.add(value)
    return seen


def _read_json(path: Path) -> Any:
    """A whole JSON file, through the guarded reader (BOM stripped; bad bytes and bad JSON named by line)."""
    return read_json_file(path)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON lines file; the first bad line raises."""
    for line in read_json_lines(path):
        if line.blank:
            continue
        if line.error is not None:
            raise line.error
        yield line.number, line.value


def _read_text(path: Path) -> str:
    """A whole text file as UTF-8, a leading BOM stripped; a bad byte is an InputError naming it."""
    lines = []
    for line in read_text_lines(path):
        if line.error is not None:
            raise line.error
        lines.append(line.text)
    return "\n".join(lines)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV file with a header, read as UTF-8 with an optional BOM."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8: byte 0x{error.object[error.start]:02x} ({error.reason})") from None
    except csv.Error as error:
        raise InputError(f"{path}: not a readable CSV file ({error})") from None


def _text_field(record: Any, key: str, where: str) -> str:
    """A field that must be a string (every character encodable as UTF-8)."""
    return _checked_text(_field(record, key, where), key, where, "a string")


def _checked_text(value: Any, key: str, where: str, expected: str) -> str:
    """``value`` when it is a string encodable as UTF-8, else an InputError naming ``where`` and ``key``."""
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__}")
    try:
        check_unicode(value, f"field {key!r}")
    except InputError as error:
        raise InputError(f"{where}: {error}") from None
    return value


def _field(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise InputError(f"{where}: missing field {key!r}")
    return record[key]


def _media_kind(spec: TaskSpec) -> str:
    if spec.direction in (Direction.TEXT_TO_IMAGE, Direction.IMAGE_TO_TEXT):
        return "image"
    if spec.direction in (Direction.TEXT_TO_VIDEO, Direction.VIDEO_TO_TEXT):
        return "video"
    raise ConfigError(f"task {spec.name}: layout {spec.layout.value} needs direction t2i, i2t, t2v or v2t")


def pairs_to_task(pairs: list[Pair], spec: TaskSpec, source: str) -> TaskData:
    """Build queries, corpus and judgements of ``spec.direction`` from media-caption pairs.

    Options of video tasks (``spec.options``): ``missing_media: drop`` leaves out every video that is missing and
    its captions alike, as CLIP4Clip keeps only the videos it finds, and lists them in ``skipped`` (other tasks
    drop single items: :meth:`TaskData.check_media`); ``trim_seconds: S`` embeds each video's first S seconds
    only (a :class:`unite.types.VideoClip`; a shorter video is used whole); ``v2t: max_over_captions`` makes
    each video query rank videos, each scored by the best of its captions (CLIP4Clip's multi-sentence rule),
    instead of ranking the captions themselves (``any_caption``, the default: found when any caption is found).
    """
    kind = _media_kind(spec)
    trim = _trim_seconds(spec, kind)
    pairs, skipped = _pairs_present(pairs, spec, kind)
    media = [Entry(f"{kind}:{pair.id}", Item(**{f"{kind}s": (_trimmed(pair.media, trim),)})) for pair in pairs]
    captions = [
        (Entry(f"text:{pair.id}#{index}", Item(text=caption)), f"{kind}:{pair.id}")
        for pair in pairs
        for index, caption in enumerate(pair.captions)
    ]
    grouped = _v2t_rule(spec, kind) == V2T_MAX_OVER_CAPTIONS
    if spec.direction.text_queries:
        qrels = {entry.id: {media_id: 1} for entry, media_id in captions}
        return TaskData([entry for entry, _ in captions], media, qrels, source=source, skipped=skipped)
    qrels: dict[str, dict[str, int]] = {entry.id: {} for entry in media}
    for entry, media_id in captions:
        qrels[media_id][entry.id] = 1
    groups = {entry.id: media_id for entry, media_id in captions} if grouped else None
    corpus = [entry for entry, _ in captions]
    return TaskData(media, corpus, qrels, source=source, skipped=skipped, candidate_groups=groups)


def _pairs_present(pairs: list[Pair], spec: TaskSpec, kind: str) -> tuple[list[Pair], list[tuple[str, str, str]]]:
    """For video tasks under ``options.missing_media: drop``, the pairs whose video exists and ``skipped`` of the
    others (their videos and captions)."""
    if kind != "video" or spec.options.get("missing_media", MISSING_MEDIA_RAISE) != MISSING_MEDIA_DROP:
        return pairs, []
    media_role, caption_role = ("candidate", "query") if spec.direction.text_queries else ("query", "candidate")
    kept, skipped = [], []
    for pair in pairs:
        if Path(pair.media).is_file():
            kept.append(pair)
            continue
        skipped.append((media_role, f"{kind}:{pair.id}", f"{kind} file not found: {pair.media}"))
        skipped += [
            (caption_role, f"text:{pair.id}#{index}", f"its {kind} is missing: {pair.media}")
            for index in range(len(pair.captions))
        ]
    if pairs and not kept:
        raise ConfigError(
            f"task {spec.name}: none of the {len(pairs)} {kind} files was found, e.g. {pairs[0].media} "
            f"(see `unite eval layout {spec.name}` for where they go)"
        )
    return kept, skipped


#: ``options.v2t`` of video pair tasks: a video query finds captions (any one counts), or videos (each scored by
#: the best of its captions, CLIP4Clip's ``tensor_video_to_text_sim``).
V2T_ANY_CAPTION, V2T_MAX_OVER_CAPTIONS = "any_caption", "max_over_captions"
V2T_RULES = (V2T_ANY_CAPTION, V2T_MAX_OVER_CAPTIONS)


def _v2t_rule(spec: TaskSpec, kind: str) -> str:
    rule = spec.options.get("v2t", V2T_ANY_CAPTION)
    if rule not in V2T_RULES:
        raise ConfigError(f"task {spec.name}: options.v2t must be one of {', '.join(V2T_RULES)}, got {rule!r}")
    if rule != V2T_ANY_CAPTION and kind != "video":
        raise ConfigError(f"task {spec.name}: options.v2t applies to video tasks (t2v, v2t), not {kind} ones")
    return rule


def _trim_seconds(spec: TaskSpec, kind: str) -> float | None:
    """``options.trim_seconds``: a positive number of seconds (video tasks only), or ``None``."""
    value = spec.options.get("trim_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"task {spec.name}: options.trim_seconds must be a positive number, got {value!r}")
    if kind != "video":
        raise ConfigError(f"task {spec.name}: options.trim_seconds applies to video tasks, not {kind} ones")
    return float(value)


def _trimmed(path: str, seconds: float | None) -> str | VideoClip:
    """The video at ``path``, or its first ``seconds`` (frames are sampled within them) when given."""
    return path if seconds is None else VideoClip(path, 0.0, seconds)


def _resolve_media(folder: Path, name: str, extensions: tuple[str, ...] = ()) -> str:
    """``folder/name``; when that file is missing, ``folder/name+ext`` or ``folder/stem+ext`` that exists."""
    path = folder / name
    if path.exists() or not extensions:
        return str(path)
    for extension in extensions:
        for candidate in (folder / f"{name}{extension}", path.with_suffix(extension)):
            if candidate.exists():
                return str(candidate)
    return str(path)


_VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


# ------------------------------------------------------------------------------------------------ generic


def _load_generic(spec: TaskSpec, folder: Path) -> TaskData:
    queries_path = _file(spec, folder, "queries", "queries.jsonl")
    corpus_path = _file(spec, folder, "corpus", "corpus.jsonl")
    qrels_path = _file(spec, folder, "qrels", "qrels.tsv")
    queries = _read_entries(queries_path)
    corpus = _read_entries(corpus_path)
    qrels = _read_qrels(qrels_path, {e.id for e in queries}, {e.id for e in corpus}, queries_path, corpus_path)
    pools = None
    if "pools" in spec.files:
        pools = _read_pools(_file(spec, folder, "pools", ""), {e.id for e in queries}, {e.id for e in corpus})
    return TaskData(queries, corpus, qrels, pools, source=f"task {spec.name} ({folder})")


def _read_entries(path: Path) -> list[Entry]:
    entries, lines = [], {}
    for record in read_item_lines(path):
        if record.error is not None:
            raise record.error
        if record.id is None:
            raise InputError(f"{path}:{record.line}: missing 'id'")
        key = str(record.id)
        if key in lines:
            raise InputError(f"{path}:{record.line}: duplicate id {key!r} (first on line {lines[key]})")
        lines[key] = record.line
        entries.append(Entry(key, record.item))
    return entries


def _read_qrels(
    path: Path, query_ids: set[str], corpus_ids: set[str], queries_path: Path, corpus_path: Path
) -> dict[str, dict[str, int]]:
    """``query_id<TAB>corpus_id<TAB>relevance`` per line; a first line that is a header is skipped."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _tsv_lines(path):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 3:
            raise InputError(f"{path}:{number}: expected query_id<TAB>corpus_id<TAB>relevance, got {line!r}")
        query_id, corpus_id, grade = (part.strip() for part in parts)
        try:
            value = int(grade)
        except ValueError:
            if number == 1:
                continue  # a header such as "query-id corpus-id score"
            raise InputError(f"{path}:{number}: relevance must be an integer, got {grade!r}") from None
        if query_id not in query_ids:
            raise InputError(f"{path}:{number}: query id {query_id!r} is not in {queries_path.name}")
        if corpus_id not in corpus_ids:
            raise InputError(f"{path}:{number}: corpus id {corpus_id!r} is not in {corpus_path.name}")
        qrels.setdefault(query_id, {})[corpus_id] = value
    return qrels


def _tsv_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a text file, by the guarded reader's rules."""
    for line in read_text_lines(path):
        if line.error is not None:
            raise line.error
        if not line.blank:
            yield line.number, line.text


def _read_pools(path: Path, query_ids: set[str], corpus_ids: set[str]) -> dict[str, list[str]]:
    """``{"query_id": ..., "candidates": [ids]}`` per line; blank lines are skipped."""
    pools = {}
    for number, record in _json_lines(path):
        where = f"{path}:{number}"
        query_id, candidates = str(_field(record, "query_id", where)), _field(record, "candidates", where)
        if not isinstance(candidates, list):
            raise InputError(f"{where}: 'candidates' must be a list of ids, got {type(candidates).__name__}")
        if query_id not in query_ids:
            raise InputError(f"{where}: query id {query_id!r} is not a query")
        unknown = [c for c in map(str, candidates) if c not in corpus_ids]
        if unknown:
            raise InputError(f"{where}: candidate id {unknown[0]!r} is not in the corpus")
        pools[query_id] = [str(c) for c in candidates]
    return pools


# --------------------------------------------------------------------------------------------------- MMEB

MMEB_PLACEHOLDER = "<|image_1|>"
#: Instruction columns of MMEB-V2 test files (``ziyjiang/MMEB_Test_Instruct``); MMEB-eval (v1) files have none.
MMEB_INSTRUCTION_COLUMNS = ("qry_inst", "tgt_inst")


def _load_mmeb(spec: TaskSpec, folder: Path) -> TaskData:
    """MMEB-eval (v1) and MMEB-V2 test files: one record per query, ranked against its own candidates.

    Candidate 0 of ``tgt_text`` / ``tgt_img_path`` is the positive (VLM2Vec scores precision@1 as the argmax
    over the record's candidates being candidate 0). MMEB-V2 records also hold ``qry_inst`` and ``tgt_inst``:
    the query instruction becomes each query's :attr:`Item.instruction` (before its text, the image first, as
    VLM2Vec composes ``image token, instruction, text``); ``tgt_inst`` goes to image candidates only, as
    VLM2Vec's t2i and i2i_vg parsers use it (text candidates of classification, VQA and i2t take ``tgt_text``).
    Image paths resolve against the first ``files.images`` folder that holds the subset's first image.
    """
    subset = spec.options.get("subset", spec.name)
    paths = _mmeb_files(spec, folder, subset)
    records = [(f"{path}:{number}", record) for path in paths for number, record in _read_records(path)]
    image_root = _media_root(spec, folder, "images", _mmeb_image_roots(spec), _mmeb_probe(records))
    queries, corpus, qrels, pools = [], {}, {}, {}
    for row, (where, record) in enumerate(records):
        query_id = f"q{row}"
        instruction = _mmeb_instruction(record, "qry_inst", where)
        queries.append(Entry(query_id, _mmeb_item(record, "qry_text", "qry_img_path", instruction, image_root, where)))
        pools[query_id] = _mmeb_pool(record, image_root, where, corpus)
        qrels[query_id] = {pools[query_id][0]: 1}
    data = TaskData(queries, list(corpus.values()), qrels, pools, source=f"task {spec.name} ({paths[0]})")
    data.protocol.update(_mmeb_protocol(folder, paths, image_root, records, data))
    return data


def _mmeb_pool(record: Any, image_root: Path, where: str, corpus: dict[str, Entry]) -> list[str]:
    """The candidate ids of one record (its ``tgt_text`` / ``tgt_img_path`` lists), in order, each once."""
    texts, images = _field(record, "tgt_text", where), _field(record, "tgt_img_path", where)
    if not isinstance(texts, list) or not isinstance(images, list) or not texts or len(texts) != len(images):
        raise InputError(f"{where}: tgt_text and tgt_img_path must be non-empty lists of equal length")
    target_instruction = _mmeb_instruction(record, "tgt_inst", where)
    pool: list[str] = []
    for text, image in zip(texts, images):
        instruction = target_instruction if image else None
        fields = {"tgt_text": text, "tgt_img_path": image}
        item = _mmeb_item(fields, "tgt_text", "tgt_img_path", instruction, image_root, where)
        key = json.dumps([text, image or "", instruction or ""])
        candidate_id = "c" + hashlib.sha1(key.encode()).hexdigest()[:16]
        corpus.setdefault(candidate_id, Entry(candidate_id, item))
        if candidate_id not in pool:
            pool.append(candidate_id)
    return pool


def _mmeb_files(spec: TaskSpec, folder: Path, subset: str) -> list[Path]:
    """The test file(s) of ``subset``: the first candidate of ``files.annotations`` that exists.

    A candidate whose last part holds ``*`` (``CIRR/test-*.parquet``) takes every matching shard, in name order.
    """
    role = "data" if "data" in spec.files else "annotations"
    default = (f"{subset}/test-*.parquet", f"{subset}/test.jsonl", f"{subset}.jsonl")
    paths = candidates(spec.files.get(role), default)
    for relative in paths:
        parent, _, name = relative.rpartition("/")
        if "*" in name:
            base = find(spec.name, folder, role, [parent or "."], "dir", required=False)
            matches = sorted(path for path in base.glob(name) if path.is_file()) if base is not None else []
        else:
            found = find(spec.name, folder, role, [relative], "file", required=False)
            matches = [found] if found is not None else []
        if matches:
            return matches
    return [find(spec.name, folder, role, paths, "file")]  # raises, listing every path tried


def _mmeb_image_roots(spec: TaskSpec) -> str | tuple[str, ...]:
    """Default ``files.images``: ``options.image_root`` (older task files), else ``eval_images``."""
    return spec.options.get("image_root", "eval_images")


def _mmeb_probe(records: list[tuple[str, Any]]) -> str | None:
    """The first image path the records name (query or candidate), to find the folder they resolve against."""
    for _, record in records:
        if not isinstance(record, dict):
            continue
        targets = record.get("tgt_img_path")
        for value in [record.get("qry_img_path"), *(targets if isinstance(targets, list) else [])]:
            if isinstance(value, str) and value:
                return value
    return None


def _mmeb_instruction(record: Any, key: str, where: str) -> str | None:
    """``qry_inst`` / ``tgt_inst`` without its ``<|image_1|>`` (the image goes first), or ``None`` when absent."""
    value = record.get(key) if isinstance(record, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value.replace(MMEB_PLACEHOLDER, "").strip() or None


def _mmeb_protocol(
    folder: Path, paths: list[Path], image_root: Path, records: list[tuple[str, Any]], data: TaskData
) -> dict[str, Any]:
    """What was read and which instruction columns were used, for the result record."""
    columns = [key for key in MMEB_INSTRUCTION_COLUMNS if any(isinstance(r, dict) and key in r for _, r in records)]
    return {
        "files": [_relative(path, folder) for path in paths],
        "image_root": _relative(image_root, folder),
        "instruction_columns": columns,
        "queries_with_instruction": sum(1 for entry in data.queries if entry.item.instruction),
        "candidates_with_instruction": sum(1 for entry in data.corpus if entry.item.instruction),
    }


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) of a JSON lines file (blank lines skipped), or (row + 1, record) of a parquet file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{path}: reading parquet needs pyarrow: pip install 'unite-embed[parquet]'") from None
        try:
            return list(enumerate(pq.read_table(path).to_pylist(), start=1))
        except (OSError, pa.ArrowException) as error:
            raise InputError(f"{path}: not a readable parquet file ({_one_line(error)})") from None
    return list(_json_lines(path))


def _mmeb_item(
    record: Any, text_key: str, image_key: str, instruction: str | None, image_root: Path, where: str
) -> Item:
    text, image = _field(record, text_key, where), _field(record, image_key, where)
    for key, value in ((text_key, text), (image_key, image)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    text = (text or "").replace(MMEB_PLACEHOLDER, "<|IMAGE|>")
    try:
        return Item(text=text or None, images=(str(image_root / image),) if image else (), instruction=instruction)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


# ---------------------------------------------------------------------------------------------- pair layouts


class CaptionRule(str, enum.Enum):
    """How a caption is read from its source text (``options.caption_rule`` of pair tasks)."""

    WHOLE = "whole"  # the whole text, stripped
    FIRST_LINE = "first_line"  # its first line (Long-CLIP's Urban1k evaluation reads readlines()[0])
    NEWLINES_TO_SPACES = "newlines_to_spaces"  # each line break a space (Long-CLIP's ShareGPT4V evaluation)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what Python's universal newlines split on


def _apply_caption_rule(text: str, rule: CaptionRule, where: str) -> str:
    """``text`` read by ``rule``, stripped.

    Raises:
        InputError: the caption comes out empty (``where`` names the file or record).
    """
    if rule is CaptionRule.FIRST_LINE:
        text = _LINE_BREAK.split(text, maxsplit=1)[0]
    elif rule is CaptionRule.NEWLINES_TO_SPACES:
        text = _LINE_BREAK.sub(" ", text)
    text = text.strip()
    if not text:
        raise InputError(f"{where}: empty caption (caption rule {rule.value})")
    return text


def _caption_rule(spec: TaskSpec) -> CaptionRule:
    value = spec.options.get("caption_rule", CaptionRule.WHOLE.value)
    return parse_enum(CaptionRule, value, f"task {spec.name}: options.caption_rule")


def _positive_option(spec: TaskSpec, key: str, default: int | None) -> int | None:
    """``options[key]``: a positive integer (``default`` when unset; ``None`` means no limit)."""
    value = spec.options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"task {spec.name}: options.{key} must be a positive integer, got {value!r}")
    return value


def _media_root(
    spec: TaskSpec, folder: Path, role: str, default: str | Sequence[str], probe: str | None
) -> Path:
    """The folder of ``role`` that holds ``probe`` (the first media file the annotations name).

    Candidates are tried in order (zips extracted once, see :mod:`unite.evaluation.locate`); when none holds
    ``probe``, the first that exists is used and the missing files are reported with their paths.

    Raises:
        ConfigError: no candidate exists, listing every path tried.
    """
    paths = candidates(spec.files.get(role), default)
    existing = []
    for relative in paths:
        root = find(spec.name, folder, role, [relative], "dir", required=False)
        if root is None:
            continue
        if probe is None or (root / probe).is_file():
            return root
        existing.append(root)
    return existing[0] if existing else find(spec.name, folder, role, paths, "dir")


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _load_karpathy(spec: TaskSpec, folder: Path) -> TaskData:
    """Karpathy split files (``dataset_flickr30k.json``, ``dataset_coco.json``): the images of ``options.split``
    (test), each with its first ``options.captions_per_item`` sentences in file order (5 keeps 25,000 COCO
    queries, as the common protocol; some COCO test images have 6 or 7). Images: ``media/filepath/filename``."""
    path = _file(spec, folder, "annotations", "dataset_flickr30k.json")
    split, rule = spec.options.get("split", "test"), _caption_rule(spec)
    keep = _positive_option(spec, "captions_per_item", None)
    records = [(f"{path}: images[{i}]", r) for i, r in enumerate(_field(_read_json(path), "images", str(path)))]
    chosen = [(where, record) for where, record in records if _field(record, "split", where) == split]
    probe = _karpathy_image(chosen[0][1], chosen[0][0]) if chosen else None
    media_root = _media_root(spec, folder, "media", "", probe)
    pairs, left_out = [], 0
    for where, record in chosen:
        sentences = _field(record, "sentences", where)
        if not isinstance(sentences, list):
            raise InputError(f"{where}: 'sentences' must be a list, got {type(sentences).__name__}")
        captions = [_apply_caption_rule(_text_field(s, "raw", f"{where}.sentences[{j}]"), rule, where)
                    for j, s in enumerate(sentences)]
        left_out += len(captions[keep:]) if keep else 0
        image = _karpathy_image(record, where)
        pairs.append(Pair(Path(image).stem, str(media_root / image), tuple(captions[:keep])))
    data = pairs_to_task(pairs, spec, f"task {spec.name} ({path})")
    data.protocol.update(annotations=_relative(path, folder), split=split, captions_per_item=keep,
                         captions_left_out=left_out, caption_rule=rule.value)
    return data


def _karpathy_image(record: Any, where: str) -> str:
    """``filepath/filename`` of a Karpathy record (``filepath`` is ``val2014`` in COCO, absent in Flickr30K)."""
    name = _text_field(record, "filename", where)
    filepath = record.get("filepath", "")
    if not isinstance(filepath, str):
        raise InputError(f"{where}: field 'filepath' must be a string, got {type(filepath).__name__}")
    return f"{filepath}/{name}" if filepath else name


def _load_sharegpt4v(spec: TaskSpec, folder: Path) -> TaskData:
    """ShareGPT4V captioner JSON: the first ``options.count`` (1000) records, as Long-CLIP evaluates, each the
    first ``gpt`` turn as caption, read by ``options.caption_rule`` (Long-CLIP: line breaks become spaces)."""
    path = _file(spec, folder, "annotations", "share-captioner_coco_lcs_sam_1246k_1107.json")
    count, rule = _positive_option(spec, "count", 1000), _caption_rule(spec)
    records = _read_json(path)
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    records = records[:count]
    probe = records[0].get("image") if records and isinstance(records[0], dict) else None
    media_root = _media_root(spec, folder, "media", "", probe if isinstance(probe, str) else None)
    pairs = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        turns = _field(record, "conversations", where)
        turns = turns if isinstance(turns, list) else []
        answers = [turn for turn in turns if isinstance(turn, dict) and turn.get("from") == "gpt"]
        if not answers:
            raise InputError(f"{where}: no 'gpt' turn holding the caption")
        caption = _apply_caption_rule(_text_field(answers[0], "value", where), rule, where)
        pairs.append(Pair(str(index), str(media_root / _text_field(record, "image", where)), (caption,)))
    data = pairs_to_task(pairs, spec, f"task {spec.name} ({path})")
    data.protocol.update(annotations=_relative(path, folder), records=len(records), caption_rule=rule.value)
    return data


def _load_caption_folder(spec: TaskSpec, folder: Path) -> TaskData:
    """Urban1K: ``caption/NAME.txt`` beside ``image/NAME.jpg``, each caption read by ``options.caption_rule``
    (Long-CLIP's Urban1k evaluation reads the first line of each file)."""
    captions_dir = _dir(spec, folder, "captions", "caption")
    caption_files = sorted(captions_dir.glob("*.txt"))
    if not caption_files:
        raise ConfigError(f"task {spec.name}: no caption files (*.txt) in {captions_dir}")
    rule = _caption_rule(spec)
    images_dir = _media_root(spec, folder, "media", "image", f"{caption_files[0].stem}.jpg")
    pairs = []
    for caption_file in caption_files:
        image = _resolve_media(images_dir, caption_file.stem, _IMAGE_EXTENSIONS)
        caption = _apply_caption_rule(_read_text(caption_file), rule, str(caption_file))
        pairs.append(Pair(caption_file.stem, image, (caption,)))
    data = pairs_to_task(pairs, spec, f"task {spec.name} ({folder})")
    data.protocol.update(captions=_relative(captions_dir, folder), caption_rule=rule.value)
    return data


def _load_docci(spec: TaskSpec, folder: Path) -> TaskData:
    """DOCCI ``docci_descriptions.jsonlines``: the records of ``options.split`` (test), one description each."""
    path = _file(spec, folder, "annotations", "docci_descriptions.jsonlines")
    split, rule = spec.options.get("split", "test"), _caption_rule(spec)
    chosen = [(f"{path}:{n}", r) for n, r in _read_records(path) if _field(r, "split", f"{path}:{n}") == split]
    probe = _text_field(chosen[0][1], "image_file", chosen[0][0]) if chosen else None
    images_dir = _media_root(spec, folder, "media", "images", probe)
    pairs = []
    for where, record in chosen:
        image = images_dir / _text_field(record, "image_file", where)
        description = _apply_caption_rule(_text_field(record, "description", where), rule, where)
        pairs.append(Pair(str(_field(record, "example_id", where)), str(image), (description,)))
    data = pairs_to_task(pairs, spec, f"task {spec.name} ({path})")
    data.protocol.update(annotations=_relative(path, folder), split=split, caption_rule=rule.value)
    return data


def _load_msrvtt(spec: TaskSpec, folder: Path) -> TaskData:
    """MSR-VTT 1k-A ``MSRVTT_JSFUSION_test.csv`` (columns key, vid_key, video_id, sentence; one sentence per video,
    1000 rows) and ``<video_id>.mp4`` files (``MSRVTT/videos/all/`` of Frozen-in-Time's MSRVTT.zip)."""
    path = _file(spec, folder, "annotations", "MSRVTT_JSFUSION_test.csv")
    videos = _MediaFolder(_dir(spec, folder, "media", "videos"))
    grouped: dict[str, list[str]] = {}
    for number, row in _csv_rows(path):
        where = f"{path}:{number}"
        grouped.setdefault(_text_field(row, "video_id", where), []).append(_text_field(row, "sentence", where).strip())
    pairs = [Pair(video, videos.find(video), tuple(c)) for video, c in grouped.items()]
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


class _CaptionUnpickler(pickle.Unpickler):
    """Reads only plain containers and strings: a downloaded pickle cannot run code here."""

    def find_class(self, module: str, name: str) -> Any:
        raise InputError(f"refusing to load {module}.{name} from a captions pickle; only dicts, lists and strings")


def _load_msvd(spec: TaskSpec, folder: Path) -> TaskData:
    """MSVD as CLIP4Clip ships it (``msvd_data.zip``): ``test_list.txt`` (670 ids) and ``raw-captions.pkl`` (id ->
    list of token lists), every caption of a test video kept; videos ``<id>.avi`` from ``YouTubeClips.tar``."""
    ids_path = _file(spec, folder, "split", "test_list.txt")
    captions_path = _file(spec, folder, "annotations", "raw-captions.pkl")
    videos = _MediaFolder(_dir(spec, folder, "media", "YouTubeClips"))
    try:
        with captions_path.open("rb") as handle:
            captions = _CaptionUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise InputError(f"{captions_path}: not a captions pickle ({error})") from None
    if not isinstance(captions, dict):
        raise InputError(f"{captions_path}: expected a dict of video id -> captions, got {type(captions).__name__}")
    pairs = []
    for number, video in enumerate(_read_text(ids_path).split(), start=1):
        if video not in captions:
            raise InputError(f"{ids_path}:{number}: video {video!r} has no captions in {captions_path.name}")
        texts = tuple(" ".join(t) if isinstance(t, list) else str(t) for t in captions[video])
        pairs.append(Pair(video, videos.find(video), texts))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({captions_path})")


def _load_didemo(spec: TaskSpec, folder: Path) -> TaskData:
    """DiDeMo test set, paragraph to video: each video's descriptions joined in file order (CLIP4Clip, CaReBench).

    The annotations are LocalizingMoments' ``test_data.json`` (records ``video``, ``description``; several per
    video) or a paragraph file (``didemo_ret_test.json`` of UMT / CaReBench: ``video`` and ``caption``, a list of
    sentences). When the ``split`` file is found (collaborative-experts' ``test_list.txt``, 1004 videos, which
    CLIP4Clip reads), only its videos are used, in its order; else every video of the annotations.
    """
    path = _file(spec, folder, "annotations", ("test_data.json", "didemo_ret_test.json"))
    videos = _MediaFolder(_dir(spec, folder, "media", "videos"))
    paragraphs: dict[str, list[str]] = {}
    for index, record in enumerate(_records(path)):
        where = f"{path}: record {index}"
        key = "description" if isinstance(record, dict) and "description" in record else "caption"
        paragraphs.setdefault(_text_field(record, "video", where), []).extend(_captions(record, key, where))
    order = list(paragraphs)
    split = _optional_file(spec, folder, "split", "test_list.txt")
    if split is not None:
        order = []
        for number, line in _tsv_lines(split):
            if line.strip() not in paragraphs:
                raise InputError(f"{split}:{number}: video {line.strip()!r} has no descriptions in {path.name}")
            order.append(line.strip())
    pairs = [Pair(video, videos.find(video), (" ".join(paragraphs[video]),)) for video in order]
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_carebench(spec: TaskSpec, folder: Path) -> TaskData:
    """CaReBench ``json/metadata.json`` (records ``video``, ``caption``, ``spatial_caption``, ``temporal_caption``,
    ``category``, ``subcategory``); ``options.caption_key`` picks the caption; videos from ``videos/videos.zip``."""
    path = _file(spec, folder, "annotations", "json/metadata.json")
    videos = _MediaFolder(_dir(spec, folder, "media", "videos"))
    key = spec.options.get("caption_key", "caption")
    pairs = []
    for index, record in enumerate(_records(path)):
        where = f"{path}: record {index}"
        video = _text_field(record, "video", where)
        pairs.append(Pair(PurePosixPath(video).stem, videos.find(video), _captions(record, key, where)))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_webvid_covr(spec: TaskSpec, folder: Path) -> TaskData:
    """WebVid-CoVR test CSV: query = video ``pth1`` + ``edit`` text; the target ``pth2`` among all targets.

    Videos are ``<pth>.mp4`` under the media folder (CoVR's ``WebVid/8M/train/<folder>/<id>.mp4``). With
    ``options.remove_self_similarity`` (default true, as CoVR's ``TestWebVidCoVR``), a query whose source video is
    also a target never ranks that video (CoVR scores it -10, below any cosine; here it is excluded).
    """
    path = _file(spec, folder, "annotations", "webvid8m-covr_test.csv")
    videos_dir = _dir(spec, folder, "media", "videos")
    remove_self = _flag(spec, "remove_self_similarity", True)
    queries, targets, qrels, sources = [], {}, {}, {}
    for row_index, (number, row) in enumerate(_csv_rows(path)):
        where = f"{path}:{number}"
        source, target = _text_field(row, "pth1", where), _text_field(row, "pth2", where)
        source_video = _resolve_media(videos_dir, f"{source}.mp4")
        query_id, target_id = f"q{row_index}", f"video:{target}"
        queries.append(Entry(query_id, Item(text=_text_field(row, "edit", where), videos=(source_video,))))
        targets.setdefault(target_id, Entry(target_id, Item(videos=(_resolve_media(videos_dir, f"{target}.mp4"),))))
        qrels[query_id] = {target_id: 1}
        sources[query_id] = f"video:{source}"
    excluded = {
        query_id: [video]
        for query_id, video in sources.items()
        if remove_self and video in targets and video not in qrels[query_id]
    }
    return TaskData(queries, list(targets.values()), qrels, source=f"task {spec.name} ({path})", excluded=excluded)


# ------------------------------------------------------------------------------------ video layouts: helpers


class _MediaFolder:
    """Finds the file an annotation names in a media folder, the way the reference loaders do.

    :meth:`find` tries ``folder/name``, then the name with a video extension added or swapped (DiDeMo's
    ``x.m4v`` is ``x.m4v.mp4`` when fetched from AWS, ``x.mp4`` after conversion); failing that, it looks at any
    depth below the folder for a file of that name or stem, as CLIP4Clip walks its video folder (an archive
    unpacks with or without a top folder). The walk runs once, at the first miss.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._indexed = False
        self._by_name: dict[str, str] = {}
        self._by_stem: dict[str, str] = {}

    def find(self, name: str) -> str:
        """The path of ``name``; ``folder/name`` when found nowhere (the missing-media check then reports it)."""
        direct = _resolve_media(self.folder, name, _VIDEO_EXTENSIONS)
        if Path(direct).is_file():
            return direct
        if not self._indexed:
            self._index()
        base = PurePosixPath(name).name
        found = self._by_name.get(base) or self._by_stem.get(base) or self._by_stem.get(PurePosixPath(base).stem)
        return found or direct

    def _index(self) -> None:
        self._indexed = True
        for root, folders, files in os.walk(self.folder):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            for file in sorted(files, key=lambda f: (PurePosixPath(f).suffix.lower() not in _KNOWN_VIDEO, f)):
                if not file.startswith("."):
                    path = str(Path(root) / file)
                    self._by_name.setdefault(file, path)
                    self._by_stem.setdefault(PurePosixPath(file).stem, path)


#: Suffixes preferred when a stem names several files (DiDeMo keeps its Flickr originals' containers).
_KNOWN_VIDEO = frozenset({*VIDEO_EXTENSIONS, ".3gp", ".3g2", ".mts", ".m2ts", ".ogv"})


def _optional_file(spec: TaskSpec, folder: Path, role: str, default: str | Sequence[str]) -> Path | None:
    """The file of ``role`` when one of its candidate paths exists, else ``None``."""
    return find(spec.name, folder, role, candidates(spec.files.get(role), default), "file", required=False)


def _records(path: Path) -> list[Any]:
    """A JSON file holding a list of records."""
    records = _read_json(path)
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def _captions(record: Any, key: str, where: str) -> tuple[str, ...]:
    """``record[key]``: one caption or a list of them, each stripped; none may be empty."""
    value = _field(record, key, where)
    texts = []
    for text in value if isinstance(value, list) else [value]:
        _checked_text(text, key, where, "a string or a list of strings")
        if not text.strip():
            raise InputError(f"{where}: field {key!r} holds an empty caption")
        texts.append(text.strip())
    if not texts:
        raise InputError(f"{where}: field {key!r} holds no caption")
    return tuple(texts)


def _flag(spec: TaskSpec, key: str, default: bool) -> bool:
    value = spec.options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"task {spec.name}: options.{key} must be true or false, got {value!r}")
    return value


LOADERS: dict[Layout, Callable[[TaskSpec, Path], TaskData]] = {
    Layout.GENERIC: _load_generic,
    Layout.MMEB: _load_mmeb,
    Layout.KARPATHY: _load_karpathy,
    Layout.SHAREGPT4V: _load_sharegpt4v,
    Layout.CAPTION_FOLDER: _load_caption_folder,
    Layout.DOCCI: _load_docci,
    Layout.MSRVTT: _load_msrvtt,
    Layout.MSVD: _load_msvd,
    Layout.DIDEMO: _load_didemo,
    Layout.CAREBENCH: _load_carebench,
    Layout.WEBVID_COVR: _load_webvid_covr,
}
