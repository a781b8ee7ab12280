"""Hostile JSON lines: the one guarded reading path, and ``unite encode --on-error skip`` fed random lines.

The rules under test (docs/encoding.md): a file is read as bytes and split on ``\\n`` only (a trailing ``\\r``
dropped, a final newline adds no line); each line is decoded as UTF-8 on its own; a leading BOM / U+FEFF is
stripped; blank lines are lines; any failure to decode or parse becomes that line's ``FILE:LINE: reason``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unite.cli.main import main
from unite.data.jsonl import holds_json_array, read_item_lines, read_json_file, read_json_lines
from unite.errors import InputError
from unite.index.sources import scan_jsonl

DEEP = b"[" * 20000
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _expected_line_count(data: bytes) -> int:
    """Lines by the rule: pieces between ``\\n``; a final newline does not start another line."""
    if not data:
        return 0
    pieces = data.split(b"\n")
    return len(pieces) - 1 if pieces[-1] == b"" else len(pieces)


# --------------------------------------------------------------------------------------------- the reader


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_never_raise_and_number_every_line(tmp_path, data):
    path = tmp_path / "random.jsonl"
    path.write_bytes(data)
    lines = list(read_json_lines(path))
    assert [line.number for line in lines] == list(range(1, _expected_line_count(data) + 1))
    for line in lines:
        if line.error is not None:  # a line has a value or an error, never both
            assert isinstance(line.error, InputError) and line.value is None
            assert str(line.error).startswith(f"{path}:{line.number}: ")
            assert "\n" not in str(line.error)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(values=st.lists(json_values, max_size=8), ascii_only=st.booleans(), crlf=st.booleans())
def test_json_values_round_trip_line_by_line(tmp_path, values, ascii_only, crlf):
    # Unescaped U+2028, U+0085 or U+001C inside strings must not split a line (str.splitlines would).
    ending = "\r\n" if crlf else "\n"
    text = "".join(json.dumps(value, ensure_ascii=ascii_only) + ending for value in values)
    path = tmp_path / "values.jsonl"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    lines = list(read_json_lines(path))
    assert [line.number for line in lines] == list(range(1, len(values) + 1))
    for line, value in zip(lines, values):
        if ascii_only or not _has_surrogate(value):
            assert line.error is None and line.value == value
        else:  # a raw surrogate written into the file is not UTF-8: that line, and only it, fails
            assert "not UTF-8" in str(line.error)


def _has_surrogate(value) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in json.dumps(value, ensure_ascii=False))


def test_line_rules(tmp_path):
    path = tmp_path / "rules.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"text": "bom"}\r\n'  # 1: BOM and CRLF
        b"\r\n"  # 2: blank
        b'"a\xe2\x80\xa8b\xc2\x85c"\n'  # 3: U+2028 and U+0085 raw inside a string
        b'\xef\xbb\xbf"feff later"\n'  # 4: U+FEFF at the start of a later line
        b'{"text": "x\xffy"}\n'  # 5: a byte that is not UTF-8, the 12th byte of the line
        + DEEP  # 6: deep nesting, no final newline
    )
    lines = list(read_json_lines(path))
    assert [line.number for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[0].value == {"text": "bom"} and lines[0].error is None
    assert lines[1].blank and str(lines[1].error) == f"{path}:2: empty line"
    assert lines[2].value == "a\u2028b\x85c"
    assert lines[3].value == "feff later"
    assert str(lines[4].error).startswith(f"{path}:5: not UTF-8: byte 0xff at column 12")
    assert str(lines[5].error).startswith(f"{path}:6: invalid JSON")


def test_final_newline_adds_no_line_and_blank_lines_count(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('"one"\n\n"three"\n')
    assert [(line.number, line.blank) for line in read_json_lines(path)] == [(1, False), (2, True), (3, False)]
    path.write_text("")
    assert list(read_json_lines(path)) == []


def test_a_file_that_cannot_be_opened_is_one_error(tmp_path):
    with pytest.raises(InputError, match="missing.jsonl: file not found"):
        read_json_lines(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="cannot read"):
        read_json_lines(tmp_path)


def test_whole_json_files_strip_the_bom_and_name_the_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'\xef\xbb\xbf  \n [{"a": 1}]')
    assert holds_json_array(path) and read_json_file(path) == [{"a": 1}]
    path.write_bytes(b'{"a": 1}')
    assert not holds_json_array(path)
    path.write_bytes(b'[\n{"a": 1},\n{"a": "\xff"}]')
    with pytest.raises(InputError, match=r"a\.json:3: not UTF-8: byte 0xff at column 8"):
        read_json_file(path)
    path.write_bytes(b"[" * 20000)
    with pytest.raises(InputError, match=r"a\.json.*invalid JSON"):
        read_json_file(path)


# ----------------------------------------------------------------------------------------- item lines, ids


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (r'{"text": "abc \ud800"}', "'text' holds a lone surrogate U+D800 at character 5"),
        (r'{"text": "a", "instruction": "\udfff"}', "'instruction' holds a lone surrogate U+DFFF at character 1"),
        (r'{"image": "x\ud83d.png"}', "'image' path holds a lone surrogate U+D83D at character 2"),
        (r'"\udc80"', "'text' holds a lone surrogate U+DC80 at character 1"),
        ('{"id": 1.5, "text": "a"}', "'id' must be a string or an integer, got number"),
        ('{"id": null, "text": "a"}', "'id' must be a string or an integer, got null"),
        ('{"id": true, "text": "a"}', "'id' must be a string or an integer, got boolean"),
        ('{"id": [1], "text": "a"}', "'id' must be a string or an integer, got array"),
        (r'{"id": "a\ud800", "text": "a"}', "'id' holds a lone surrogate U+D800 at character 2"),
    ],
)
def test_item_lines_refuse_unencodable_strings_and_bad_ids(tmp_path, line, message):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 7, "text": "fine"}\n' + line + "\n")
    first, second = read_item_lines(path)
    assert first.error is None and first.id == 7
    assert second.item is None and str(second.error).startswith(f"{path}:2: {message}")


def test_item_lines_keep_a_valid_id_of_a_failed_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "doc", "text": "a", "extra": 1}\n')
    (record,) = read_item_lines(path)
    assert record.id == "doc" and "unknown key" in str(record.error)


# ------------------------------------------------------------------------------------------ index scanning


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "\xc3("}\n', "bad.jsonl:2: not UTF-8: byte 0xc3 at column 22"),
        (b'{"id": "a", "text": "x"}\n' + b"[" * 20000 + b"\n", "bad.jsonl:2: invalid JSON"),
        (
            b'{"id": "a", "text": "x"}\n{"id": "b\\ud800", "text": "y"}\n',
            "bad.jsonl:2: field 'id' holds a lone surrogate",
        ),
        (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "\\ud800"}\n', "bad.jsonl:2: 'text' holds a lone"),
        (
            b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y", "metadata": {"k": "\\udc00"}}\n',
            "bad.jsonl:2: field 'metadata' holds a string with a lone surrogate",
        ),
        (b'{"id": "a", "text": "x"}\n{"id": 2.5, "text": "y"}\n', "bad.jsonl:2: field 'id'"),
    ],
)
def test_scan_jsonl_names_the_line_of_any_bad_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        scan_jsonl(path)


def test_scan_jsonl_reads_bom_crlf_and_unicode_line_separators(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": "a", "text": "one\xe2\x80\xa8two"}\r\n\r\n'
        b'\xef\xbb\xbf{"id": "b", "text": "three"}\r\n{"id": "a", "text": "again"}\n'
    )
    with pytest.raises(InputError, match=r"ok\.jsonl:4: id 'a' already used on line 1"):
        scan_jsonl(path)
    path.write_bytes(path.read_bytes().rsplit(b"\n", 2)[0] + b"\n")
    assert [entry.id for entry in scan_jsonl(path)] == ["a", "b"]


# ------------------------------------------------------------------------------- unite encode, end to end

item_texts = st.text(alphabet=st.characters(), min_size=0, max_size=24)  # surrogates included
item_dicts = st.fixed_dictionaries(
    {"text": item_texts},
    optional={
        "id": json_values,
        "instruction": item_texts,
        "image": st.one_of(item_texts, st.lists(item_texts, max_size=2), json_values),
        "video": st.one_of(st.lists(item_texts, max_size=2), json_values),
    },
)
random_lines = st.one_of(
    st.binary(max_size=40).filter(lambda raw: b"\n" not in raw),
    json_values.map(json.dumps),
    item_texts.map(json.dumps),
    item_dicts.map(json.dumps),
    st.integers(min_value=1, max_value=30000).map(lambda depth: "[" * depth),
    st.text(max_size=30).filter(lambda text: "\n" not in text),
)


@FUZZ
@given(lines=st.lists(random_lines, min_size=1, max_size=8))
def test_encode_skip_accounts_for_every_random_line(tmp_path_factory, legacy_checkpoint, lines):
    folder = tmp_path_factory.mktemp("fuzz")
    items = folder / "items.jsonl"
    items.write_bytes(
        b"".join((line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")) + b"\n" for line in lines)
    )
    count = _expected_line_count(items.read_bytes())
    out, errors = folder / "out.npy", folder / "errors.jsonl"
    argv = ["encode", str(items), "--model", str(legacy_checkpoint), "--output", str(out), "--device", "cpu"]
    assert main([*argv, "--on-error", "skip", "--errors", str(errors), "--no-progress"]) == 0
    vectors, mask = np.load(out), np.load(folder / "out.mask.npy")
    assert vectors.shape[0] == mask.shape[0] == count
    listed = [json.loads(line)["line"] for line in errors.read_text().splitlines()]
    assert len(listed) == len(set(listed)) and set(listed) <= set(range(1, count + 1))
    failed = {number - 1 for number in listed}
    for row in range(count):
        if row in failed:
            assert not mask[row] and not vectors[row].any()
        else:
            assert mask[row]
            np.testing.assert_allclose(np.linalg.norm(vectors[row]), 1.0, atol=1e-4)


def test_encode_skip_lines_that_fail_past_the_reader(tmp_path, legacy_checkpoint):
    """An object id (pyarrow could not write it), an unknown user's ``~`` path, an empty frame list."""
    pq = pytest.importorskip("pyarrow.parquet")
    items = tmp_path / "items.jsonl"
    lines = [
        {"text": "a", "id": {"k": 1}},
        {"text": "b", "image": "~nosuchuser0/x.png"},
        {"text": "c", "video": [[]]},
        {"text": "d", "id": 3},
    ]
    items.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.parquet"
    argv = ["encode", str(items), "--model", str(legacy_checkpoint), "--output", str(out), "--device", "cpu"]
    assert main([*argv, "--on-error", "skip"]) == 0
    table = pq.read_table(out).to_pydict()
    assert table["line"] == [1, 2, 3, 4] and table["ok"] == [False, False, False, True]
    assert table["id"] == [None, None, None, "3"]
    listed = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [entry["line"] for entry in listed] == [1, 2, 3]
    assert "'id' must be a string or an integer, got object" in listed[0]["error"]


def test_item_lines_may_carry_metadata_as_index_sources_do(tmp_path):
    """The JSONL of an index source (`{"id", ..., "metadata": {...}}`) is also a valid `unite encode` input: the
    metadata is set aside (an object, else that line fails), the item is the rest."""
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "text": "x", "metadata": {"k": 1}}\n{"id": "b", "text": "y", "metadata": 5}\n')
    first, second = read_item_lines(path)
    assert first.error is None and first.item.text == "x" and first.id == "a"
    assert second.item is None and "'metadata' must be an object, got int" in str(second.error)
