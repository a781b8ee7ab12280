"""The one item type every part of unite shares."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unite.errors import InputError

__all__ = ["IMAGE_PLACEHOLDER", "VIDEO_PLACEHOLDER", "Item", "ItemLike", "Modality", "VideoClip", "check_unicode"]

IMAGE_PLACEHOLDER = "<|IMAGE|>"
VIDEO_PLACEHOLDER = "<|VIDEO|>"

#: Image sources: a path or URL string, a ``pathlib.Path``, a PIL image or a uint8 array (H, W[, C]).
ImageSource = Any
#: Video sources: a path or URL string, a ``pathlib.Path``, a list of frames (image sources) or a uint8 array
#: (T, H, W[, C]).
VideoSource = Any


@dataclass(frozen=True)
class VideoClip:
    """A time range of a video file, embedded as a video of its own (frames sampled within the range).

    Attributes:
        path: the video file.
        start, end: the range in seconds.
    """

    path: str
    start: float
    end: float


class Modality(enum.IntFlag):
    """Modalities as bits, as MAMCL encodes target modalities: text=1, image=2, video=4."""

    TEXT = 1
    IMAGE = 2
    VIDEO = 4

    @property
    def prompt_words(self) -> str:
        """The ``{modalities}`` of the prompt: ``sentence``, ``image``, ``video`` joined with `` and ``."""
        words = [word for flag, word in _PROMPT_WORDS if flag in self]
        return " and ".join(words)

    @classmethod
    def parse(cls, value: str | int | Modality) -> Modality:
        """Parse ``"text,image"``, ``"image"``, ``3`` or a :class:`Modality`."""
        if isinstance(value, Modality):
            return value
        if isinstance(value, int):
            if not 0 < value < 8:
                raise InputError(f"modality bits must be between 1 and 7, got {value}")
            return cls(value)
        names = [part.strip().lower() for part in str(value).replace("+", ",").split(",") if part.strip()]
        result = cls(0)
        for name in names:
            if name not in _BY_NAME:
                raise InputError(f"unknown modality {name!r}; expected text, image or video")
            result |= _BY_NAME[name]
        if not result:
            raise InputError(f"empty modality {value!r}")
        return result


_PROMPT_WORDS = ((Modality.TEXT, "sentence"), (Modality.IMAGE, "image"), (Modality.VIDEO, "video"))
_BY_NAME = {"text": Modality.TEXT, "sentence": Modality.TEXT, "image": Modality.IMAGE, "video": Modality.VIDEO}
_ITEM_KEYS = ("text", "image", "video", "instruction")
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".gif", ".flv", ".wmv"})


@dataclass(frozen=True)
class Item:
    """Text, any number of images and videos, and an optional instruction: one thing to embed.

    ``text`` may hold ``<|IMAGE|>`` and ``<|VIDEO|>`` placeholders; their counts must equal the numbers of images
    and videos, or be zero, in which case the media go before the text. The text, the instruction and media
    paths must be encodable as UTF-8: a lone surrogate (``"\\ud800"`` in JSON) is refused, naming the field and
    the character position.
    """

    text: str | None = None
    images: tuple[ImageSource, ...] = ()
    videos: tuple[VideoSource, ...] = ()
    instruction: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "videos", tuple(self.videos))
        for name in ("text", "instruction"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputError(f"'{name}' must be a string, got {type(value).__name__}")
            if value is not None:
                check_unicode(value, f"'{name}'")
        _check_paths(self.images, "image")
        _check_paths(self.videos, "video")
        text = self.text or ""
        for placeholder, media, kind in (
            (IMAGE_PLACEHOLDER, self.images, "image"),
            (VIDEO_PLACEHOLDER, self.videos, "video"),
        ):
            count = text.count(placeholder)
            if count and count != len(media):
                raise InputError(
                    f"text has {count} {placeholder} placeholder(s) but the item has {len(media)} {kind}(s)"
                )
        if not self.images and not self.videos and not self.plain_text.strip() and not (self.instruction or "").strip():
            raise InputError("empty item: no text, image or video")

    @property
    def plain_text(self) -> str:
        """The text with its placeholders removed."""
        return (self.text or "").replace(IMAGE_PLACEHOLDER, "").replace(VIDEO_PLACEHOLDER, "")

    @property
    def modality(self) -> Modality:
        """Which modalities the item holds; an instruction counts as text."""
        result = Modality(0)
        if self.plain_text.strip() or (self.instruction or "").strip():
            result |= Modality.TEXT
        if self.images:
            result |= Modality.IMAGE
        if self.videos:
            result |= Modality.VIDEO
        return result

    def with_instruction(self, instruction: str | None) -> Item:
        """A copy carrying ``instruction`` (unchanged when ``instruction`` is ``None``)."""
        if instruction is None:
            return self
        return Item(self.text, self.images, self.videos, instruction)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> Item:
        """Parse ``{"text": ..., "image": path or [paths], "video": path or [frame paths], "instruction": ...}``.

        Relative media paths resolve against ``base_dir`` when given. Unknown keys are refused.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"an item must be a JSON object or a string, got {type(data).__name__}")
        unknown = [key for key in data if key not in _ITEM_KEYS]
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(_ITEM_KEYS)}")
        images = _as_list(data.get("image"), "image")
        videos = _as_list(data.get("video"), "video", allow_frame_lists=True)
        _check_paths(images, "image")  # as written, before resolving, so positions are the user's
        _check_paths(videos, "video")
        if base_dir is not None:
            images = [_resolve(source, base_dir) for source in images]
            videos = [
                [_resolve(frame, base_dir) for frame in source]
                if isinstance(source, list)
                else _resolve(source, base_dir)
                for source in videos
            ]
        return cls(data.get("text"), tuple(images), tuple(videos), data.get("instruction"))


ItemLike = Item | str | Mapping[str, Any]


def to_item(value: Any, base_dir: str | Path | None = None) -> Item:
    """Turn a string, dict, PIL image or :class:`Item` into an :class:`Item`."""
    if isinstance(value, Item):
        return value
    if isinstance(value, str):
        return Item(text=value)
    if isinstance(value, Mapping):
        return Item.from_dict(value, base_dir)
    if type(value).__module__.startswith("PIL.") or type(value).__name__ == "ndarray":
        return Item(images=(value,))
    raise InputError(f"cannot embed a {type(value).__name__}; pass a string, a dict, a PIL image or an Item")


def check_unicode(value: str, name: str) -> None:
    """Refuse a string that cannot be written as UTF-8: one holding a lone surrogate (``"\\ud800"`` in JSON).

    Raises:
        InputError: naming ``name``, the code point and its 1-based character position.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(value[error.start])
        raise InputError(
            f"{name} holds a lone surrogate U+{code:04X} at character {error.start + 1}; expected text that "
            "can be written as UTF-8"
        ) from None


def _check_paths(sources: Sequence[Any], key: str) -> None:
    """Refuse a media path (a frame of a frame list, a clip's file) holding a lone surrogate."""
    for source in sources:
        for value in source if isinstance(source, (list, tuple)) else [source]:
            path = value.path if isinstance(value, VideoClip) else value
            if isinstance(path, (str, Path)):
                check_unicode(str(path), f"'{key}' path")


def _as_list(value: Any, key: str, allow_frame_lists: bool = False) -> list[Any]:
    """One source or a list of sources. In JSON, ``"video": [paths]`` is one video given as its frames."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        if key == "video" and allow_frame_lists and value and all(isinstance(v, (str, Path)) for v in value):
            if not all(Path(str(v)).suffix.lower() in VIDEO_EXTENSIONS for v in value):
                return [list(value)]
        for element in value:
            if not _is_source(element, key):
                raise InputError(f"'{key}' entries must be paths or decoded media, got {type(element).__name__}")
        return list(value)
    if _is_source(value, key):
        return [value]
    raise InputError(f"'{key}' must be a path or a list of paths, got {type(value).__name__}")


def _is_source(value: Any, key: str) -> bool:
    if key == "video" and isinstance(value, VideoClip):
        return True
    if isinstance(value, (str, Path)) or type(value).__name__ == "ndarray":
        return True
    if type(value).__module__.startswith("PIL."):
        return True
    return key == "video" and isinstance(value, (list, tuple))


def _resolve(source: Any, base_dir: str | Path) -> Any:
    """A relative path joined to ``base_dir``; URLs (``scheme://...``) are left as they are, for the media
    reader to fetch or refuse."""
    if isinstance(source, (str, Path)) and "://" not in str(source):
        path = Path(source)
        try:
            path = path.expanduser()
        except RuntimeError:  # ~user of an unknown user: left as written, a missing file later
            pass
        return str(path if path.is_absolute() else Path(base_dir) / path)
    return source
