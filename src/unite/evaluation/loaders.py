"""Loaders: each public file layout becomes one internal form, :class:`TaskData`.

Pair layouts (an image or video with one or several captions) go through :func:`pairs_to_task`, which builds
either direction: text queries against the media (each caption's one relevant item), or media queries against
every caption (all captions of the item are relevant; recall@k counts a query as found when any of them is in
the first k, as the benchmarks define it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unite.data.jsonl import read_item_lines, read_json_file, read_json_lines, read_text_lines
from unite.errors import ConfigError, InputError
from unite.evaluation.locate import candidates, find
from unite.evaluation.tasks import Direction, Layout, TaskSpec
from unite.types import Item, check_unicode

__all__ = ["Entry", "Pair", "TaskData", "load_task_data", "pairs_to_task"]


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
    """

    queries: list[Entry]
    corpus: list[Entry]
    qrels: dict[str, dict[str, int]]
    pools: dict[str, list[str]] | None = None
    source: str = ""
    dropped_queries: list[str] = field(default_factory=list)

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
        judged = [e for e in self.queries if any(grade > 0 for grade in self.qrels.get(e.id, {}).values())]
        self.dropped_queries += [e.id for e in self.queries if e not in judged]
        self.queries = judged
        if not self.queries:
            raise ConfigError(f"{self.source}: no query has a relevant candidate")
        return self

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
        return TaskData(
            queries,
            [entry for entry in self.corpus if entry.id in keep],
            {e.id: self.qrels[e.id] for e in queries if e.id in self.qrels},
            None if self.pools is None else {e.id: self.pools[e.id] for e in queries if e.id in self.pools},
            self.source,
        )

    def media_paths(self) -> list[str]:
        """Every local media path the items name (frames of frame lists included), in order, once."""
        paths: dict[str, None] = {}
        for entry in [*self.queries, *self.corpus]:
            for source in [*entry.item.images, *entry.item.videos]:
                for value in source if isinstance(source, list) else [source]:
                    if isinstance(value, (str, Path)) and not str(value).startswith(("http://", "https://")):
                        paths[str(value)] = None
        return list(paths)

    def check_media(self, shown: int = 3) -> None:
        """Raise one error listing missing media files before any model is loaded."""
        missing = [path for path in self.media_paths() if not Path(path).is_file()]
        if missing:
            examples = ", ".join(missing[:shown])
            raise ConfigError(f"{self.source}: {len(missing)} media file(s) not found, e.g. {examples}")


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
    value = _field(record, key, where)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
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
    """Build queries, corpus and judgements of ``spec.direction`` from media-caption pairs."""
    kind = _media_kind(spec)
    media = [Entry(f"{kind}:{pair.id}", Item(**{f"{kind}s": (pair.media,)})) for pair in pairs]
    captions = [
        (Entry(f"text:{pair.id}#{index}", Item(text=caption)), f"{kind}:{pair.id}")
        for pair in pairs
        for index, caption in enumerate(pair.captions)
    ]
    if spec.direction.text_queries:
        qrels = {entry.id: {media_id: 1} for entry, media_id in captions}
        return TaskData([entry for entry, _ in captions], media, qrels, source=source)
    qrels: dict[str, dict[str, int]] = {entry.id: {} for entry in media}
    for entry, media_id in captions:
        qrels[media_id][entry.id] = 1
    return TaskData(media, [entry for entry, _ in captions], qrels, source=source)


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


def _load_mmeb(spec: TaskSpec, folder: Path) -> TaskData:
    """MMEB-eval: one record per query; candidate 0 of ``tgt_text`` / ``tgt_img_path`` is the positive."""
    subset = spec.options.get("subset", spec.name)
    path = _mmeb_file(spec, folder, subset)
    image_root = folder / spec.options.get("image_root", "eval_images")
    records = _read_records(path)
    queries, corpus, qrels, pools = [], {}, {}, {}
    for row, (number, record) in enumerate(records):
        where = f"{path}:{number}"
        query_id = f"q{row}"
        queries.append(Entry(query_id, _mmeb_item(record, "qry_text", "qry_img_path", image_root, where)))
        texts, images = _field(record, "tgt_text", where), _field(record, "tgt_img_path", where)
        if not isinstance(texts, list) or not isinstance(images, list) or not texts or len(texts) != len(images):
            raise InputError(f"{where}: tgt_text and tgt_img_path must be non-empty lists of equal length")
        pool: list[str] = []
        for text, image in zip(texts, images):
            item = _mmeb_item({"t": text, "i": image}, "t", "i", image_root, where)
            key = json.dumps([text, image or ""])
            candidate_id = "c" + hashlib.sha1(key.encode()).hexdigest()[:16]
            corpus.setdefault(candidate_id, Entry(candidate_id, item))
            if candidate_id not in pool:
                pool.append(candidate_id)
        pools[query_id] = pool
        qrels[query_id] = {pool[0]: 1}
    return TaskData(queries, list(corpus.values()), qrels, pools, source=f"task {spec.name} ({path})")


def _mmeb_file(spec: TaskSpec, folder: Path, subset: str) -> Path:
    if "data" in spec.files:
        return _file(spec, folder, "data", "")
    candidates = [folder / subset / "test-00000-of-00001.parquet", folder / subset / "test.jsonl"]
    candidates.append(folder / f"{subset}.jsonl")
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"task {spec.name}: MMEB-eval file for {subset} not found (tried {tried})")


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) of a JSON lines file (blank lines skipped), or (row + 1, record) of a parquet file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{path}: reading parquet needs pyarrow: pip install 'unite-embed[parquet]'") from None
        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    return list(_json_lines(path))


def _mmeb_item(record: dict[str, Any], text_key: str, image_key: str, image_root: Path, where: str) -> Item:
    text, image = _field(record, text_key, where), _field(record, image_key, where)
    for key, value in ((text_key, text), (image_key, image)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    text = (text or "").replace(MMEB_PLACEHOLDER, "<|IMAGE|>")
    try:
        return Item(text=text or None, images=(str(image_root / image),) if image else ())
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


# ---------------------------------------------------------------------------------------------- pair layouts


def _load_karpathy(spec: TaskSpec, folder: Path) -> TaskData:
    """Karpathy split files (``dataset_flickr30k.json``, ``dataset_coco.json``)."""
    path = _file(spec, folder, "annotations", "dataset_flickr30k.json")
    media_root = _dir(spec, folder, "media", "")
    split = spec.options.get("split", "test")
    pairs = []
    for index, record in enumerate(_field(_read_json(path), "images", str(path))):
        where = f"{path}: images[{index}]"
        if _field(record, "split", where) != split:
            continue
        name = _field(record, "filename", where)
        image = media_root / record.get("filepath", "") / name
        captions = tuple(str(_field(s, "raw", where)).strip() for s in _field(record, "sentences", where))
        pairs.append(Pair(Path(name).stem, str(image), captions))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_sharegpt4v(spec: TaskSpec, folder: Path) -> TaskData:
    """ShareGPT4V captioner JSON; ShareGPT4V-1K takes the first ``options.count`` (1000) records."""
    path = _file(spec, folder, "annotations", "share-captioner_coco_lcs_sam_1246k_1107.json")
    media_root = _dir(spec, folder, "media", "")
    count = int(spec.options.get("count", 1000))
    pairs = []
    for index, record in enumerate(_read_json(path)[:count]):
        where = f"{path}: record {index}"
        turns = [t for t in _field(record, "conversations", where) if t.get("from") == "gpt"]
        if not turns:
            raise InputError(f"{where}: no 'gpt' turn holding the caption")
        image = _field(record, "image", where)
        pairs.append(Pair(str(index), str(media_root / image), (str(turns[0]["value"]).strip(),)))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_caption_folder(spec: TaskSpec, folder: Path) -> TaskData:
    """Urban1K: ``image/NAME.jpg`` beside ``caption/NAME.txt``."""
    captions_dir = _dir(spec, folder, "captions", "caption")
    images_dir = _dir(spec, folder, "media", "image")
    pairs = []
    for caption_file in sorted(captions_dir.glob("*.txt")):
        image = _resolve_media(images_dir, caption_file.stem, _IMAGE_EXTENSIONS)
        pairs.append(Pair(caption_file.stem, image, (_read_text(caption_file).strip(),)))
    if not pairs:
        raise ConfigError(f"task {spec.name}: no caption files (*.txt) in {captions_dir}")
    return pairs_to_task(pairs, spec, f"task {spec.name} ({folder})")


def _load_docci(spec: TaskSpec, folder: Path) -> TaskData:
    """DOCCI ``docci_descriptions.jsonlines``, records of ``options.split`` (test)."""
    path = _file(spec, folder, "annotations", "docci_descriptions.jsonlines")
    images_dir = _dir(spec, folder, "media", "images")
    split = spec.options.get("split", "test")
    pairs = []
    for number, record in _read_records(path):
        where = f"{path}:{number}"
        if _field(record, "split", where) != split:
            continue
        image = images_dir / _text_field(record, "image_file", where)
        example_id, description = _field(record, "example_id", where), _text_field(record, "description", where)
        pairs.append(Pair(str(example_id), str(image), (description,)))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_msrvtt(spec: TaskSpec, folder: Path) -> TaskData:
    """MSR-VTT 1k-A ``MSRVTT_JSFUSION_test.csv`` (columns key, vid_key, video_id, sentence)."""
    path = _file(spec, folder, "annotations", "MSRVTT_JSFUSION_test.csv")
    videos_dir = _dir(spec, folder, "media", "videos")
    grouped: dict[str, list[str]] = {}
    for number, row in _csv_rows(path):
        where = f"{path}:{number}"
        grouped.setdefault(_text_field(row, "video_id", where), []).append(_text_field(row, "sentence", where).strip())
    pairs = [
        Pair(video, _resolve_media(videos_dir, video, _VIDEO_EXTENSIONS), tuple(c)) for video, c in grouped.items()
    ]
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


class _CaptionUnpickler(pickle.Unpickler):
    """Reads only plain containers and strings: a downloaded pickle cannot run code here."""

    def find_class(self, module: str, name: str) -> Any:
        raise InputError(f"refusing to load {module}.{name} from a captions pickle; only dicts, lists and strings")


def _load_msvd(spec: TaskSpec, folder: Path) -> TaskData:
    """MSVD as CLIP4Clip ships it: ``test_list.txt`` and ``raw-captions.pkl`` (id -> list of token lists)."""
    ids_path = _file(spec, folder, "split", "test_list.txt")
    captions_path = _file(spec, folder, "annotations", "raw-captions.pkl")
    videos_dir = _dir(spec, folder, "media", "YouTubeClips")
    try:
        with captions_path.open("rb") as handle:
            captions = _CaptionUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise InputError(f"{captions_path}: not a captions pickle ({error})") from None
    pairs = []
    for number, video in enumerate(_read_text(ids_path).split(), start=1):
        if video not in captions:
            raise InputError(f"{ids_path}:{number}: video {video!r} has no captions in {captions_path.name}")
        texts = tuple(" ".join(t) if isinstance(t, list) else str(t) for t in captions[video])
        pairs.append(Pair(video, _resolve_media(videos_dir, video, _VIDEO_EXTENSIONS), texts))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({captions_path})")


def _load_didemo(spec: TaskSpec, folder: Path) -> TaskData:
    """DiDeMo ``test_data.json``: the descriptions of each video joined into one paragraph (CLIP4Clip's protocol)."""
    path = _file(spec, folder, "annotations", "test_data.json")
    videos_dir = _dir(spec, folder, "media", "videos")
    grouped: dict[str, list[str]] = {}
    for index, record in enumerate(_read_json(path)):
        where = f"{path}: record {index}"
        grouped.setdefault(_field(record, "video", where), []).append(str(_field(record, "description", where)))
    pairs = [
        Pair(Path(video).stem, _resolve_media(videos_dir, video, _VIDEO_EXTENSIONS), (" ".join(t).strip(),))
        for video, t in grouped.items()
    ]
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_carebench(spec: TaskSpec, folder: Path) -> TaskData:
    """CaReBench ``json/metadata.json``; ``options.caption_key`` picks the general, spatial or temporal caption."""
    path = _file(spec, folder, "annotations", "json/metadata.json")
    videos_dir = _dir(spec, folder, "media", "videos")
    key = spec.options.get("caption_key", "caption")
    pairs = []
    for index, record in enumerate(_read_json(path)):
        where = f"{path}: record {index}"
        video = _field(record, "video", where)
        pairs.append(Pair(Path(video).stem, str(videos_dir / video), (str(_field(record, key, where)).strip(),)))
    return pairs_to_task(pairs, spec, f"task {spec.name} ({path})")


def _load_webvid_covr(spec: TaskSpec, folder: Path) -> TaskData:
    """WebVid-CoVR test CSV: query = video ``pth1`` + ``edit`` text; the target ``pth2`` among all targets."""
    path = _file(spec, folder, "annotations", "webvid8m-covr_test.csv")
    videos_dir = _dir(spec, folder, "media", "videos")
    queries, targets, qrels = [], {}, {}
    for row_index, (number, row) in enumerate(_csv_rows(path)):
        where = f"{path}:{number}"
        source, target = _text_field(row, "pth1", where), _text_field(row, "pth2", where)
        source_video = _resolve_media(videos_dir, f"{source}.mp4")
        query_id, target_id = f"q{row_index}", f"video:{target}"
        queries.append(Entry(query_id, Item(text=_text_field(row, "edit", where), videos=(source_video,))))
        targets.setdefault(target_id, Entry(target_id, Item(videos=(_resolve_media(videos_dir, f"{target}.mp4"),))))
        qrels[query_id] = {target_id: 1}
    return TaskData(queries, list(targets.values()), qrels, source=f"task {spec.name} ({path})")


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
