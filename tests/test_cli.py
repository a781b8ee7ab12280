"""The ``unite encode`` contract, end to end through a real subprocess and in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from unite import UniteEncoder
from unite.cli.main import main


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture()
def items_file(tmp_path, media_dir):
    for name in ("a.png", "clip.mp4", "frame0.png", "frame1.png", "frame2.png"):
        (tmp_path / name).write_bytes((media_dir / name).read_bytes())
    return _write(
        tmp_path / "items.jsonl",
        [
            {"text": "a red circle"},
            {"image": "a.png"},
            {"video": "clip.mp4"},
            {"text": "<|IMAGE|> and a clip <|VIDEO|>", "image": "a.png", "video": "clip.mp4"},
            {"video": ["frame0.png", "frame1.png", "frame2.png"]},
        ],
    )


def test_encode_subprocess_matches_python_api(items_file, legacy_checkpoint, tmp_path):
    out = tmp_path / "out.npy"
    command = [
        sys.executable,
        "-m",
        "unite.cli.main",
        "encode",
        str(items_file),
        "--model",
        str(legacy_checkpoint),
        "--output",
        str(out),
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--video-frames",
        "4",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    vectors = np.load(out)
    assert vectors.shape == (5, 64) and vectors.dtype == np.float32
    encoder = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", video_frames=4)
    items = [json.loads(line) for line in items_file.read_text().splitlines()]
    for item in items:
        for key in ("image", "video"):
            if isinstance(item.get(key), str):
                item[key] = str(tmp_path / item[key])
            elif isinstance(item.get(key), list):
                item[key] = [str(tmp_path / p) for p in item[key]]
    np.testing.assert_allclose(vectors, encoder.encode(items), atol=2e-5)


def test_settings_flags_change_the_result(items_file, legacy_checkpoint, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    base = ["encode", str(items_file), "--model", str(legacy_checkpoint), "--device", "cpu"]
    assert main([*base, "--output", str(a), "--video-frames", "4"]) == 0
    assert (
        main(
            [
                *base,
                "--output",
                str(b),
                "--video-fps",
                "2",
                "--video-max-pixels",
                str(64 * 28 * 28),
                "--image-max-pixels",
                str(300 * 28 * 28),
                "--image-min-pixels",
                str(200 * 28 * 28),
            ]
        )
        == 0
    )
    first, second = np.load(a), np.load(b)
    np.testing.assert_allclose(first[0], second[0], atol=1e-6)  # text is untouched by media settings
    assert np.all(np.sum(first[1:] * second[1:], axis=1) < 0.99999)


def test_raise_policy_names_the_line_and_writes_nothing(items_file, legacy_checkpoint, tmp_path, capsys):
    lines = items_file.read_text().splitlines()
    _write(items_file, [*lines[:2], {"image": "nope.png"}, *lines[2:]])
    out = tmp_path / "out.npy"
    code = main(["encode", str(items_file), "--model", str(legacy_checkpoint), "--output", str(out), "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("unite: error: ") and "items.jsonl:3:" in err and "nope.png: file not found" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_skip_policy_accounts_for_every_line(items_file, legacy_checkpoint, tmp_path):
    lines = items_file.read_text().splitlines()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _write(
        items_file,
        [
            lines[0],
            "{not json",
            {"image": "corrupt.png"},
            "",
            {"text": "x", "extra": 1},
            lines[1],
            {"text": "<|IMAGE|><|IMAGE|>", "image": "a.png"},
        ],
    )
    out, errors = tmp_path / "out.npy", tmp_path / "errors.jsonl"
    code = main(
        [
            "encode",
            str(items_file),
            "--model",
            str(legacy_checkpoint),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--on-error",
            "skip",
            "--errors",
            str(errors),
        ]
    )
    assert code == 0
    vectors, mask = np.load(out), np.load(tmp_path / "out.mask.npy")
    assert vectors.shape[0] == 7
    assert mask.tolist() == [True, False, False, False, False, True, False]
    reported = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [entry["line"] for entry in reported] == [2, 3, 4, 5, 7]
    reasons = " | ".join(entry["error"] for entry in reported)
    for reason in ("invalid JSON", "corrupt", "empty line", "unknown key", "placeholder"):
        assert reason in reasons
    assert not vectors[~mask].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[mask], axis=1), 1.0, atol=1e-5)


def test_parquet_output_keeps_ids(tmp_path, legacy_checkpoint):
    pq = pytest.importorskip("pyarrow.parquet")
    items = _write(tmp_path / "items.jsonl", [{"id": "doc-1", "text": "one"}, {"id": 2, "image": "missing.png"}])
    out = tmp_path / "out.parquet"
    assert (
        main(
            [
                "encode",
                str(items),
                "--model",
                str(legacy_checkpoint),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--on-error",
                "skip",
            ]
        )
        == 0
    )
    table = pq.read_table(out).to_pydict()
    assert table["id"] == ["doc-1", "2"] and table["ok"] == [True, False] and table["line"] == [1, 2]
    assert table["embedding"][1] is None and len(table["embedding"][0]) == 64
    assert (tmp_path / "out.errors.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "out.txt"], "must end with .npy or .parquet"),
        (["--output", "o.npy", "--errors", "e.jsonl"], "--errors only applies"),
        (
            ["--output", "o.npy", "--dtype", "float32", "--video-min-frames", "9", "--video-max-frames", "4"],
            "video_min_frames",
        ),
    ],
)
def test_bad_usage_is_one_line(items_file, legacy_checkpoint, argv, message, capsys):
    code = main(["encode", str(items_file), "--model", str(legacy_checkpoint), "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


def test_missing_items_file_and_model(tmp_path, legacy_checkpoint, capsys):
    assert (
        main(
            [
                "encode",
                str(tmp_path / "none.jsonl"),
                "--model",
                str(legacy_checkpoint),
                "--output",
                str(tmp_path / "o.npy"),
            ]
        )
        == 1
    )
    assert "none.jsonl: file not found" in capsys.readouterr().err
    items = _write(tmp_path / "i.jsonl", ['"plain string item"'])
    assert main(["encode", str(items), "--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "o.npy")]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_help_lists_the_contract(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--model",
        "--output",
        "--batch-size",
        "--device",
        "--dtype",
        "--video-fps",
        "--video-min-frames",
        "--video-max-frames",
        "--video-frames",
        "--video-max-pixels",
        "--image-min-pixels",
        "--image-max-pixels",
        "--on-error",
        "--errors",
    ):
        assert flag in text


def test_demo_offline_runs(tmp_path, capsys):
    assert main(["demo", "--offline", "--output-dir", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "TINY RANDOM checkpoint" in out and "an astronaut in a spacesuit" in out
    corpus = tmp_path / "demo" / "corpus"
    photos = sorted(p.name for p in (corpus / "photos").glob("*.jpg"))
    assert "astronaut.jpg" in photos and len(photos) == 7
    from unite.index import open_store

    ids = set(open_store(tmp_path / "demo" / "index").content_hashes())
    # 48 frames at 8 fps = 6 s, indexed as 2 s clips; 24 frames = 3 s gives a 2 s clip and a 1 s tail
    assert {f"clips/traffic_light.mp4#t={a},{b}" for a, b in ((0, 2), (2, 4), (4, 6))} <= ids
    assert {"clips/red_ball.mp4#t=0,2", "clips/red_ball.mp4#t=2,3", "notes/cat.txt", "photos/astronaut.jpg"} <= ids
    assert len(ids) == 7 + 3 + 2 + 3
    page = (tmp_path / "demo" / "results.html").read_text()
    assert "TINY RANDOM" in page and page.count("data:image/jpeg;base64,") >= 5


# ------------------------------------------------------------------------------- hostile lines, both policies

GOOD_FIRST, GOOD_THIRD = b'{"text": "first"}', b'{"text": "third"}'
BAD_LINES = {
    "bad byte": (b'{"text": "caf\xe9"}', "not UTF-8: byte 0xe9 at column 14"),
    "deep nesting": (b"[" * 20000, "invalid JSON"),
    "lone surrogate escape": (rb'{"text": "abc \ud800"}', "'text' holds a lone surrogate U+D800 at character 5"),
    "surrogate id": (rb'{"id": "x\udfff", "text": "ok"}', "'id' holds a lone surrogate U+DFFF at character 2"),
    "float id": (b'{"id": 0.5, "text": "ok"}', "'id' must be a string or an integer, got number"),
}


def _encode(items, out, checkpoint, *extra):
    return main(["encode", str(items), "--model", str(checkpoint), "--output", str(out), "--device", "cpu", *extra])


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_hostile_line_is_skipped_alone(tmp_path, legacy_checkpoint, case):
    bad, reason = BAD_LINES[case]
    items = tmp_path / "items.jsonl"
    items.write_bytes(GOOD_FIRST + b"\n" + bad + b"\n" + GOOD_THIRD + b"\n")
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint, "--on-error", "skip") == 0
    vectors, mask = np.load(tmp_path / "out.npy"), np.load(tmp_path / "out.mask.npy")
    assert mask.tolist() == [True, False, True] and not vectors[1].any()
    listed = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert len(listed) == 1 and listed[0]["line"] == 2
    assert listed[0]["error"].startswith(f"{items}:2: ") and reason in listed[0]["error"]
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(GOOD_FIRST + b"\n" + GOOD_THIRD + b"\n")
    assert _encode(plain, tmp_path / "plain.npy", legacy_checkpoint) == 0
    np.testing.assert_allclose(vectors[mask], np.load(tmp_path / "plain.npy"), atol=1e-5)


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_hostile_line_stops_the_raise_policy_in_one_line(tmp_path, legacy_checkpoint, case, capsys):
    bad, reason = BAD_LINES[case]
    items = tmp_path / "items.jsonl"
    items.write_bytes(GOOD_FIRST + b"\n" + bad + b"\n" + GOOD_THIRD + b"\n")
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"unite: error: {items}:2: ") and reason in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["items.jsonl"]  # nothing written


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + GOOD_FIRST + b"\n" + GOOD_THIRD + b"\n",  # a BOM at the start of the file
        GOOD_FIRST + b"\n\xef\xbb\xbf" + GOOD_THIRD + b"\n",  # U+FEFF at the start of a later line
        GOOD_FIRST + b"\r\n" + GOOD_THIRD + b"\r\n",  # CRLF line endings
        GOOD_FIRST + b"\n" + GOOD_THIRD,  # no final newline
    ],
    ids=["bom", "feff-later", "crlf", "no-final-newline"],
)
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_bom_crlf_and_feff_lines_embed_like_plain_ones(tmp_path, legacy_checkpoint, content, policy):
    items, plain = tmp_path / "items.jsonl", tmp_path / "plain.jsonl"
    items.write_bytes(content)
    plain.write_bytes(GOOD_FIRST + b"\n" + GOOD_THIRD + b"\n")
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint, "--on-error", policy) == 0
    assert _encode(plain, tmp_path / "plain.npy", legacy_checkpoint) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.load(tmp_path / "plain.npy"), atol=1e-6)
    if policy == "skip":
        assert (tmp_path / "out.errors.jsonl").read_text() == ""


def test_an_exception_while_preparing_one_item_fails_only_that_line(tmp_path, legacy_checkpoint, monkeypatch, capsys):
    from unite.data.collator import ItemProcessor

    prepare = ItemProcessor.prepare

    def fragile(self, item):
        if item.text == "boom":
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return prepare(self, item)

    monkeypatch.setattr(ItemProcessor, "prepare", fragile)
    items = _write(tmp_path / "items.jsonl", [{"text": "a"}, {"text": "boom"}, {"text": "c"}])
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint, "--on-error", "skip") == 0
    assert np.load(tmp_path / "out.mask.npy").tolist() == [True, False, True]
    (listed,) = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert listed["line"] == 2
    assert listed["error"] == f"{items}:2: internal error while preparing the item: TypeError: TextEncodeInput " + (
        "must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]"
    )
    capsys.readouterr()
    assert _encode(items, tmp_path / "raise.npy", legacy_checkpoint) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"unite: error: {items}:2: internal error while preparing the item: TypeError: ")
    assert len(err.splitlines()) == 1 and not (tmp_path / "raise.npy").exists()


def test_a_batch_failing_in_the_model_is_retried_item_by_item(tmp_path, legacy_checkpoint, monkeypatch):
    embed = UniteEncoder._embed

    def fragile(self, features):
        if len(features) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return embed(self, features)

    monkeypatch.setattr(UniteEncoder, "_embed", fragile)
    items = _write(tmp_path / "items.jsonl", [{"text": "a"}, {"text": "b b"}, {"text": "c c c"}])
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint, "--on-error", "skip") == 0
    assert np.load(tmp_path / "out.mask.npy").all()
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    monkeypatch.setattr(UniteEncoder, "_embed", embed)
    assert _encode(items, tmp_path / "plain.npy", legacy_checkpoint) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.load(tmp_path / "plain.npy"), atol=1e-5)


def test_parquet_never_fails_on_an_id(tmp_path, legacy_checkpoint):
    pq = pytest.importorskip("pyarrow.parquet")
    items = tmp_path / "items.jsonl"
    items.write_bytes(
        b'{"id": "a", "text": "one"}\n{"id": "b\\ud800", "text": "two"}\n{"id": {"x": 1}, "text": "three"}\n'
        b'{"id": 12345678901234567890123, "text": "four"}\n'
    )
    out = tmp_path / "out.parquet"
    assert _encode(items, out, legacy_checkpoint, "--on-error", "skip") == 0
    table = pq.read_table(out).to_pydict()
    assert table["ok"] == [True, False, False, True] and table["line"] == [1, 2, 3, 4]
    assert table["id"] == ["a", None, None, "12345678901234567890123"]


def test_errors_file_is_replaced_whole(tmp_path, legacy_checkpoint):
    items = _write(tmp_path / "items.jsonl", [{"text": "a"}, "{broken"])
    errors = tmp_path / "errors.jsonl"
    errors.write_text("stale\n" * 100)
    assert _encode(items, tmp_path / "out.npy", legacy_checkpoint, "--on-error", "skip", "--errors", str(errors)) == 0
    assert [json.loads(line)["line"] for line in errors.read_text().splitlines()] == [2]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "errors.jsonl",
        "items.jsonl",
        "out.mask.npy",
        "out.npy",
    ]
