"""Evaluation tasks as data: a :class:`TaskSpec` says what to load, how to encode it and how to score it.

A spec is either registered in Python (:mod:`unite.evaluation.registry`, the paper's benchmarks) or written
as a ``task.yaml`` beside the generic files ``queries.jsonl``, ``corpus.jsonl`` and ``qrels.tsv``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unite.errors import ConfigError
from unite.evaluation.metrics import DEFAULT_METRICS, parse_metric
from unite.settings import EncodingSettings, parse_enum

__all__ = ["Direction", "Layout", "TaskSpec", "load_task_spec"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class Layout(str, enum.Enum):
    """The public file layouts the loaders read (see :mod:`unite.evaluation.loaders`)."""

    GENERIC = "generic"  # queries.jsonl, corpus.jsonl, qrels.tsv
    MMEB = "mmeb"  # MMEB-eval: qry_text, qry_img_path, tgt_text[], tgt_img_path[], positive first
    KARPATHY = "karpathy"  # dataset_flickr30k.json / dataset_coco.json: images[] with split and sentences[]
    SHAREGPT4V = "sharegpt4v"  # ShareGPT4V captioner JSON: image + conversations, the first 1000 records
    CAPTION_FOLDER = "caption_folder"  # Urban1K: image/NAME.jpg + caption/NAME.txt
    DOCCI = "docci"  # docci_descriptions.jsonlines: example_id, split, image_file, description
    MSRVTT = "msrvtt"  # MSRVTT_JSFUSION_test.csv: key, vid_key, video_id, sentence
    MSVD = "msvd"  # test_list.txt + raw-captions.pkl (video id -> list of token lists)
    DIDEMO = "didemo"  # test_data.json: video, description (one paragraph per video)
    CAREBENCH = "carebench"  # json/metadata.json: video, caption, spatial_caption, temporal_caption
    WEBVID_COVR = "webvid_covr"  # webvid8m-covr_test.csv: pth1, pth2, edit


class Direction(str, enum.Enum):
    """Which side is the query. Pair layouts build either direction from the same files."""

    TEXT_TO_IMAGE = "t2i"
    IMAGE_TO_TEXT = "i2t"
    TEXT_TO_VIDEO = "t2v"
    VIDEO_TO_TEXT = "v2t"
    COMPOSED = "composed"  # a video plus an edit text, to the edited video
    ANY = "any"  # whatever the files hold (generic, MMEB)

    @property
    def text_queries(self) -> bool:
        return self in (Direction.TEXT_TO_IMAGE, Direction.TEXT_TO_VIDEO)


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark: where its data is, how to encode it and how to score it.

    Attributes:
        name: file-safe name; results are written to ``<name>.json``.
        layout: the file layout its loader reads.
        direction: which side is the query.
        files: role -> path relative to the task's data folder (``queries``, ``corpus``, ``qrels`` for the
            generic layout; ``annotations``, ``media`` and others for the public layouts), or a list of such
            paths tried in order (the layouts a download and a plain unzip produce); a path may pass through a
            zip archive (:mod:`unite.evaluation.locate`).
        data_dir: the data folder, relative to the data root (registered tasks) or to ``task.yaml``, or a list
            of such folders tried in order (``.`` is the root itself).
        main_metric: the number put beside the paper's.
        metrics: every metric recorded.
        settings: :class:`unite.EncodingSettings` fields this benchmark fixes (e.g. ``video_frames: 48``).
        query_instruction: instruction given to every query (Instruct checkpoints).
        document_instruction: instruction given to every candidate.
        options: layout options (caption key, split, how many records).
        group: a family such as ``MMEB/Classification``; ``tags`` such as ``ind`` / ``ood``.
        paper: model -> the paper's value of ``main_metric`` in percent (docs/reference.md section 10).
        source: where the public data comes from and how its files map to ``files``.
    """

    name: str
    layout: Layout = Layout.GENERIC
    direction: Direction = Direction.ANY
    files: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    data_dir: str | tuple[str, ...] = ""
    main_metric: str = "recall@1"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    settings: Mapping[str, Any] = field(default_factory=dict)
    query_instruction: str | None = None
    document_instruction: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    group: str = ""
    tags: tuple[str, ...] = ()
    paper: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"task name must be letters, digits, '.', '_', '+' or '-', got {self.name!r}")
        object.__setattr__(self, "layout", parse_enum(Layout, self.layout, "layout"))
        object.__setattr__(self, "direction", parse_enum(Direction, self.direction, "direction"))
        object.__setattr__(self, "files", {role: _paths(role, value) for role, value in dict(self.files).items()})
        object.__setattr__(self, "data_dir", _paths("data_dir", self.data_dir))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "tags", tuple(self.tags))
        for metric in self.metrics:
            parse_metric(metric)
        parse_metric(self.main_metric)
        if self.main_metric not in self.metrics:
            object.__setattr__(self, "metrics", (self.main_metric, *self.metrics))
        EncodingSettings().replace(**dict(self.settings))  # unknown or invalid settings raise here

    @property
    def data_dirs(self) -> tuple[str, ...]:
        """The data folders to try, in order."""
        return (self.data_dir,) if isinstance(self.data_dir, str) else self.data_dir

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what each result records about its task)."""
        data = dataclasses.asdict(self)
        data["data_dir"] = self.data_dir if isinstance(self.data_dir, str) else list(self.data_dir)
        data["layout"] = self.layout.value
        data["direction"] = self.direction.value
        for key in ("settings", "options", "paper"):
            data[key] = dict(getattr(self, key))
        data["files"] = {role: v if isinstance(v, str) else list(v) for role, v in self.files.items()}
        data["metrics"] = list(self.metrics)
        data["tags"] = list(self.tags)
        return data

    def replace(self, **changes: Any) -> TaskSpec:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(TaskSpec)}


def _paths(name: str, value: Any) -> str | tuple[str, ...]:
    """A relative path, or a non-empty list of them (kept as a tuple)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{name} must be a path or a non-empty list of paths, got {value!r}")


def load_task_spec(path: str | Path) -> tuple[TaskSpec, Path]:
    """Read a ``task.yaml``; returns the spec and the folder its relative paths resolve against.

    Unset ``name`` defaults to the folder's name; unset ``files`` to the generic ``queries.jsonl``,
    ``corpus.jsonl`` and ``qrels.tsv``.

    Raises:
        ConfigError: the file is missing, is not YAML, or has an unknown or ill-typed field (named).
    """
    path = Path(path)
    try:
        import yaml
    except ImportError:
        raise ConfigError("task.yaml files need PyYAML: pip install 'unite-embed[eval]'") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: task file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of task fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(_FIELDS)}")
    data.setdefault("name", path.resolve().parent.name)
    if data.get("layout", "generic") == "generic":
        data.setdefault("files", {"queries": "queries.jsonl", "corpus": "corpus.jsonl", "qrels": "qrels.tsv"})
    for key in ("files", "settings", "options", "paper"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{path}: field '{key}' must be a mapping, got {type(data[key]).__name__}")
    for key in ("metrics", "tags"):
        if key in data:
            if isinstance(data[key], str):
                data[key] = [data[key]]
            if not isinstance(data[key], list):
                raise ConfigError(f"{path}: field '{key}' must be a list, got {type(data[key]).__name__}")
    for key in ("name", "main_metric", "query_instruction", "document_instruction", "source"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"{path}: field '{key}' must be a string, got {type(data[key]).__name__}")
    try:
        spec = TaskSpec(**data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    from unite.evaluation.locate import data_folder

    return spec, data_folder(spec.name, spec.data_dirs, path.resolve().parent)
