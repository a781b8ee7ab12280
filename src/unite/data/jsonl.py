"""Reading items from JSON lines files, line by line, with errors that name the line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unite.errors import InputError
from unite.types import Item

__all__ = ["JsonlRecord", "read_item_lines"]


@dataclass
class JsonlRecord:
    """One line of an items file: its number, its id if any, and the parsed item or the error."""

    line: int
    item: Item | None
    id: Any = None
    error: InputError | None = None


def read_item_lines(path: str | Path, extra_keys: tuple[str, ...] = ("id",)) -> list[JsonlRecord]:
    """Parse every line of ``path``; relative media paths resolve against the file's folder.

    A line is a JSON object in the item dict form (``extra_keys`` such as ``id`` are set aside) or a JSON
    string (text). Every line, blank ones included, gives one record, so rows never shift.

    Raises:
        InputError: the file cannot be read at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [_parse_line(number, line, path, extra_keys) for number, line in enumerate(lines, start=1)]


def _parse_line(number: int, line: str, path: Path, extra_keys: tuple[str, ...]) -> JsonlRecord:
    def fail(message: str) -> JsonlRecord:
        return JsonlRecord(number, None, error=InputError(f"{path}:{number}: {message}"))

    if not line.strip():
        return fail("empty line")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        return fail(f"invalid JSON ({error.msg} at column {error.colno})")
    record_id = None
    if isinstance(data, dict):
        data = dict(data)
        extras = {key: data.pop(key) for key in extra_keys if key in data}
        record_id = extras.get("id")
    try:
        item = Item(text=data) if isinstance(data, str) else Item.from_dict(data, base_dir=path.parent)
    except InputError as error:
        return fail(str(error))
    return JsonlRecord(number, item, id=record_id)
