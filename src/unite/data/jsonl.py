"""The one guarded path by which every JSON lines (and JSON) file of unite is read.

Rules, the same for ``unite encode``, evaluation tasks, training data and index sources:

- the file is read as bytes, streamed, and split on ``\\n`` only (a trailing ``\\r`` is dropped); a final
  newline does not start another line, so line numbers are what an editor shows (``str.splitlines`` would
  also split on U+2028, U+0085 and others, shifting every number after them);
- each line is decoded as UTF-8 on its own, so one bad byte fails one line, naming the byte and its column;
- a BOM at the start of the file, and a U+FEFF at the start of any line, are stripped;
- JSON parsing is guarded: any exception (bad JSON, nesting deep enough to exhaust the recursion limit, an
  integer too long to convert, ...) becomes that line's error ``FILE:LINE: reason``; blank lines are lines;
- a file that cannot be opened at all is one :class:`InputError` for the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from unite.errors import InputError
from unite.types import Item, check_unicode

__all__ = [
    "ITEM_EXTRA_KEYS",
    "JsonLine",
    "JsonlRecord",
    "TextLine",
    "count_lines",
    "holds_json_array",
    "item_record",
    "read_item_lines",
    "read_item_range",
    "read_json_file",
    "read_json_lines",
    "read_text_lines",
    "validate_id",
]

BOM = "\ufeff"
#: Keys an item line may carry besides the item's own: its ``id`` and free ``metadata`` (an object, kept by index
#: builds), set aside before the item is parsed.
ITEM_EXTRA_KEYS = ("id", "metadata")
_BOM_BYTES = BOM.encode("utf-8")
_JSON_TYPES = {type(None): "null", bool: "boolean", float: "number", list: "array", dict: "object"}


@dataclass(frozen=True)
class TextLine:
    """One line of a text file: its 1-based number and its decoded text, or why it could not be decoded."""

    number: int
    text: str | None
    error: InputError | None = None

    @property
    def blank(self) -> bool:
        return self.text is not None and not self.text.strip()


@dataclass(frozen=True)
class JsonLine:
    """One line of a JSON lines file: its number and parsed value, or its error (``FILE:LINE: reason``).

    ``blank`` lines carry the error ``empty line``; readers that allow blank lines skip them.
    """

    number: int
    value: Any = None
    error: InputError | None = None
    blank: bool = False


@dataclass
class JsonlRecord:
    """One line of an items file: its number, its id if any, and the parsed item or the error."""

    line: int
    item: Item | None
    id: Any = None
    error: InputError | None = None


def read_text_lines(
    path: str | Path, offset: int = 0, first_line: int = 1, limit: int | None = None
) -> Iterator[TextLine]:
    """Lines of ``path`` by the rules of this module: bytes split on ``\\n``, each decoded on its own.

    The file is opened now and read as the iterator is consumed. A range of lines is read without reading what
    comes before it: ``offset`` is the byte offset where line ``first_line`` starts (see :func:`count_lines`),
    and at most ``limit`` lines are read from there.

    Raises:
        InputError: the file cannot be opened or read.
    """
    path = Path(path)
    handle = _open(path)
    if offset:
        try:
            handle.seek(offset)
        except OSError as error:
            handle.close()
            raise InputError(f"{path}:{first_line}: cannot read ({error})") from None
    return _decoded_lines(handle, path, first_line - 1, limit)


def read_json_lines(
    path: str | Path, offset: int = 0, first_line: int = 1, limit: int | None = None
) -> Iterator[JsonLine]:
    """Every line of ``path`` parsed as JSON, in order, each with its value or its error; never raises per line.

    ``offset``, ``first_line`` and ``limit`` read a range of lines, as in :func:`read_text_lines`.

    Raises:
        InputError: the file cannot be opened or read (not for a bad line).
    """
    path = Path(path)
    return (_parse_json_line(line, path) for line in read_text_lines(path, offset, first_line, limit))


def count_lines(path: str | Path, every: int | None = None) -> tuple[int, list[int]]:
    """The number of lines of ``path`` by the rules of this module, streamed, and where runs of lines start.

    Args:
        path: the file.
        every: when given, the byte offsets of lines 1, 1 + every, 1 + 2 * every, ... are returned, so that
            :func:`read_text_lines` can start a run of ``every`` lines without reading the lines before it.

    Returns:
        (lines, offsets); ``offsets`` is empty when ``every`` is None.

    Raises:
        InputError: the file cannot be opened or read.
    """
    path = Path(path)
    lines, position, offsets = 0, 0, []
    with _open(path) as handle:
        while True:
            try:
                raw = handle.readline()
            except OSError as error:
                raise InputError(f"{path}:{lines + 1}: cannot read ({error})") from None
            if not raw:
                return lines, offsets
            if every is not None and lines % every == 0:
                offsets.append(position)
            lines += 1
            position += len(raw)


def read_json_file(path: str | Path) -> Any:
    """A whole JSON file (a leading BOM stripped), parsed with the same guards as a JSON line.

    Raises:
        InputError: the file cannot be read, is not UTF-8 (naming line and column of the byte) or is not JSON.
    """
    path = Path(path)
    with _open(path) as handle:
        data = _read(handle, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError(f"{path}:{line}: {_decode_reason(error, data, column)}") from None
    try:
        return json.loads(text.removeprefix(BOM))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
    except Exception as error:  # RecursionError of deep nesting, ValueError of huge integers, ...
        raise InputError(f"{path}: {_json_reason(error)}") from None


def holds_json_array(path: str | Path) -> bool:
    """Whether the first character of ``path`` past a BOM and whitespace is ``[`` (a JSON array file).

    Raises:
        InputError: the file cannot be opened or read.
    """
    path = Path(path)
    with _open(path) as handle:
        head = _read(handle, path, 3).removeprefix(_BOM_BYTES)
        while True:
            rest = head.lstrip(b" \t\r\n")
            if rest:
                return rest.startswith(b"[")
            head = _read(handle, path, 1 << 16)
            if not head:
                return False


def validate_id(value: Any) -> str | int:
    """A record's ``id``: a string or an integer (not a boolean), every character encodable as UTF-8.

    Raises:
        InputError: naming what arrived instead.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = _JSON_TYPES.get(type(value), type(value).__name__)
        raise InputError(f"'id' must be a string or an integer, got {kind}")
    if isinstance(value, str):
        check_unicode(value, "'id'")
    return value


def read_item_lines(path: str | Path, extra_keys: tuple[str, ...] = ITEM_EXTRA_KEYS) -> list[JsonlRecord]:
    """Parse every line of ``path`` into an item; relative media paths resolve against the file's folder.

    A line is a JSON object in the item dict form (``extra_keys`` such as ``id`` are set aside; an ``id`` must
    pass :func:`validate_id`) or a JSON string (text). Every line, blank ones included, gives one record, so
    rows never shift; a line that fails for any reason carries its error ``FILE:LINE: reason``.

    Raises:
        InputError: the file cannot be opened or read at all.
    """
    path = Path(path)
    return [_item_record(line, path, extra_keys) for line in read_json_lines(path)]


def read_item_range(
    path: str | Path, offset: int, first_line: int, limit: int, extra_keys: tuple[str, ...] = ITEM_EXTRA_KEYS
) -> list[JsonlRecord]:
    """:func:`read_item_lines` for ``limit`` lines from line ``first_line``, which starts at byte ``offset``.

    Raises:
        InputError: the file cannot be opened or read at all.
    """
    path = Path(path)
    return [_item_record(line, path, extra_keys) for line in read_json_lines(path, offset, first_line, limit)]


def item_record(value: Any, line: int, path: str | Path, extra_keys: tuple[str, ...] = ITEM_EXTRA_KEYS) -> JsonlRecord:
    """One already parsed value (a row of a Parquet file, ...) checked exactly like a line of an items file:
    the record of :func:`read_item_lines` for a line ``line`` of ``path`` that held ``value``."""
    return _item_record(JsonLine(line, value), Path(path), extra_keys)


# ------------------------------------------------------------------------------------------------ internals


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error})") from None


def _read(handle: BinaryIO, path: Path, size: int = -1) -> bytes:
    try:
        return handle.read(size)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error})") from None


def _decoded_lines(handle: BinaryIO, path: Path, number: int = 0, limit: int | None = None) -> Iterator[TextLine]:
    end = None if limit is None else number + limit
    with handle:
        while end is None or number < end:
            try:
                raw = handle.readline()
            except OSError as error:
                raise InputError(f"{path}:{number + 1}: cannot read ({error})") from None
            if not raw:
                return
            number += 1
            yield _decode_line(number, raw, path)


def _decode_line(number: int, raw: bytes, path: Path) -> TextLine:
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return TextLine(number, None, InputError(f"{path}:{number}: {_decode_reason(error, raw, error.start + 1)}"))
    return TextLine(number, text.lstrip(BOM))


def _decode_reason(error: UnicodeDecodeError, data: bytes, column: int) -> str:
    return f"not UTF-8: byte 0x{data[error.start]:02x} at column {column} ({error.reason})"


def _parse_json_line(line: TextLine, path: Path) -> JsonLine:
    if line.error is not None:
        return JsonLine(line.number, error=line.error)
    if line.blank:
        return JsonLine(line.number, error=InputError(f"{path}:{line.number}: empty line"), blank=True)
    try:
        return JsonLine(line.number, json.loads(line.text))
    except Exception as error:  # JSONDecodeError, RecursionError, ValueError (huge integers), MemoryError, ...
        return JsonLine(line.number, error=InputError(f"{path}:{line.number}: {_json_reason(error)}"))


def _json_reason(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON ({error.msg} at column {error.colno})"
    if isinstance(error, RecursionError):
        return "invalid JSON (nested too deeply)"
    return f"invalid JSON ({type(error).__name__}: {error})"


def _item_record(line: JsonLine, path: Path, extra_keys: tuple[str, ...]) -> JsonlRecord:
    if line.error is not None:
        return JsonlRecord(line.number, None, error=line.error)
    data, record_id = line.value, None
    try:
        if isinstance(data, dict):
            data = dict(data)
            extras = {key: data.pop(key) for key in extra_keys if key in data}
            if "id" in extras:
                record_id = validate_id(extras["id"])
            if not isinstance(extras.get("metadata", {}), dict):
                kind = _JSON_TYPES.get(type(extras["metadata"]), type(extras["metadata"]).__name__)
                raise InputError(f"'metadata' must be an object, got {kind}")
        item = Item(text=data) if isinstance(data, str) else Item.from_dict(data, base_dir=path.parent)
    except InputError as error:
        reason = str(error)
    except Exception as error:  # the last guard of this edge: no line may take the run down
        reason = f"internal error while parsing the item: {type(error).__name__}: {error}"
    else:
        return JsonlRecord(line.number, item, id=record_id)
    return JsonlRecord(line.number, None, id=record_id, error=InputError(f"{path}:{line.number}: {reason}"))
