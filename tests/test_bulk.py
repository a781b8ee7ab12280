"""Corpus-scale ``unite encode SOURCE... --output OUT_DIR/``: shards equal the single-process output, the
manifest accounts for every line, a killed run resumes, a different job is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from unite.bulk import engine_local  # noqa: E402
from unite.bulk.engine import BulkJob  # noqa: E402
from unite.bulk.plan import plan_shards  # noqa: E402
from unite.bulk.run import run_bulk  # noqa: E402
from unite.bulk.sources import SourceFile, expand_sources, read_rows, scan_sources  # noqa: E402
from unite.cli.main import main  # noqa: E402
from unite.data.jsonl import read_item_lines  # noqa: E402
from unite.errors import ConfigError, InputError  # noqa: E402

SETTINGS = ["--video-frames", "4"]
MEDIA = ("a.png", "b.jpg", "rgba.png", "grey.png", "clip.mp4", "frame0.png", "frame1.png", "frame2.png")
SCHEMA = [
    ("source", "string"),
    ("line", "int64"),
    ("id", "string"),
    ("ok", "bool"),
    ("embedding", "list<element: float>"),
    ("error", "string"),
]
_ORIGINAL_TASK = engine_local._prepare_task  # what a worker runs; the poisoned task below wraps it


def _lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


PARQUET_ROWS = [
    {"text": "a photo", "image": None, "video": None, "id": 1},
    {"text": None, "image": "a.png", "video": None, "id": 2},
    {"text": None, "image": None, "video": "clip.mp4", "id": None},
    {"text": None, "image": None, "video": None, "id": None},  # empty item
    {"text": "<|IMAGE|> and <|IMAGE|>", "image": "a.png", "video": None, "id": None},  # placeholder mismatch
    {"text": None, "image": "missing.png", "video": None, "id": 6},
    {"text": "<|IMAGE|> fused", "image": "b.jpg", "video": None, "id": 7},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media_dir) -> Path:
    """Two JSON lines sources and a Parquet source (7 rows in row groups of 2), with bad lines of every kind,
    plus ``c.jsonl``: the Parquet rows as JSON lines, for the single-process reference."""
    folder = tmp_path_factory.mktemp("corpus")
    for name in MEDIA:
        shutil.copy(media_dir / name, folder / name)
    _lines(
        folder / "a.jsonl",
        [
            {"text": "a red circle", "id": "doc-1"},
            {"image": "a.png"},
            "{not json",
            {"image": "missing.png"},
            {"text": "<|IMAGE|> and a clip <|VIDEO|>", "image": "b.jpg", "video": "clip.mp4"},
            "",
            {"text": "x", "extra": 1},
            {"video": ["frame0.png", "frame1.png", "frame2.png"], "id": 8},
        ],
    )
    _lines(
        folder / "b.jsonl",
        [
            {"video": "clip.mp4", "id": "v"},
            {"text": "plain text only"},
            {"image": "rgba.png"},
            {"text": "<|IMAGE|><|IMAGE|>", "image": "a.png"},
            {"text": "grey", "image": "grey.png"},
        ],
    )
    table = pa.table(
        {key: [row[key] for row in PARQUET_ROWS] for key in ("text", "image", "video")}
        | {"id": pa.array([row["id"] for row in PARQUET_ROWS], type=pa.int64())}
    )
    pq.write_table(table, folder / "c.parquet", row_group_size=2)
    _lines(folder / "c.jsonl", [{k: v for k, v in row.items() if v is not None} for row in PARQUET_ROWS])
    return folder


def _single_process(source: Path, checkpoint: Path, out: Path) -> dict[int, tuple]:
    """``unite encode SOURCE --output OUT.parquet --on-error skip``: {line: (ok, embedding, error)}."""
    argv = ["encode", str(source), "--model", str(checkpoint), "--output", str(out), "--device", "cpu"]
    assert main([*argv, "--on-error", "skip", "--no-progress", *SETTINGS]) == 0
    table = pq.read_table(out).to_pydict()
    errors = out.with_name(out.stem + ".errors.jsonl").read_text().splitlines()
    errors = {entry["line"]: entry["error"] for entry in map(json.loads, errors)}
    return {
        line: (ok, embedding, errors.get(line))
        for line, ok, embedding in zip(table["line"], table["ok"], table["embedding"])
    }


@pytest.fixture(scope="module")
def reference(corpus, legacy_checkpoint, tmp_path_factory) -> dict[str, dict[int, tuple]]:
    out = tmp_path_factory.mktemp("reference")
    found = {
        name: _single_process(corpus / name, legacy_checkpoint, out / f"{name}.parquet")
        for name in ("a.jsonl", "b.jsonl")
    }
    c_lines = _single_process(corpus / "c.jsonl", legacy_checkpoint, out / "c.parquet")
    renamed = {
        line: (ok, embedding, error and error.replace(f"{corpus / 'c.jsonl'}:", f"{corpus / 'c.parquet'}:"))
        for line, (ok, embedding, error) in c_lines.items()
    }
    return {str(corpus / name): found[name] for name in found} | {str(corpus / "c.parquet"): renamed}


def _bulk_argv(sources: list, out: str, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "encode",
        *map(str, sources),
        "--model",
        str(checkpoint),
        "--output",
        out,
        "--device",
        "cpu",
        "--workers",
        "2",
        "--no-progress",
        *SETTINGS,
        *extra,
    ]


@pytest.fixture(scope="module")
def sharded(corpus, legacy_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "out"
    sources = [corpus / "a.jsonl", corpus / "b.jsonl", corpus / "c.parquet"]
    argv = _bulk_argv(sources, f"{out}/", legacy_checkpoint, "--shard-size", "3", "--on-error", "skip")
    assert main(argv) == 0
    return out


def _rows(folder: Path) -> dict[tuple[str, int], tuple]:
    """Every row of every shard: {(source, line): (ok, embedding, error, id)}; a row seen twice fails."""
    rows: dict[tuple[str, int], tuple] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path).to_pydict()
        for source, line, ok, embedding, error, item_id in zip(
            table["source"], table["line"], table["ok"], table["embedding"], table["error"], table["id"]
        ):
            assert (source, line) not in rows, f"{source}:{line} is in two rows"
            rows[(source, line)] = (ok, embedding, error, item_id)
    return rows


def _assert_equal_to_reference(rows: dict, reference: dict[str, dict[int, tuple]]) -> None:
    expected_keys = {(source, line) for source, lines in reference.items() for line in lines}
    assert set(rows) == expected_keys  # every input line exactly once (duplicates fail in _rows)
    for (source, line), (ok, embedding, error, _) in rows.items():
        ref_ok, ref_embedding, ref_error = reference[source][line]
        assert ok == ref_ok and error == ref_error, (source, line)
        if ok:
            cosine = float(np.dot(embedding, ref_embedding) / np.linalg.norm(embedding) / np.linalg.norm(ref_embedding))
            assert cosine >= 0.99999, (source, line, cosine)
        else:
            assert embedding == []


# ------------------------------------------------------------------------------------- the shards themselves


def test_shards_equal_single_process_unite_encode(sharded, reference):
    rows = _rows(sharded)
    _assert_equal_to_reference(rows, reference)
    failed = {(Path(source).name, line) for (source, line), (ok, *_) in rows.items() if not ok}
    # a.jsonl: bad JSON, missing image, empty line, unknown key; b.jsonl: placeholders; c.parquet: empty item,
    # placeholders, missing image
    assert failed == {("a.jsonl", 3), ("a.jsonl", 4), ("a.jsonl", 6), ("a.jsonl", 7), ("b.jsonl", 4)} | {
        ("c.parquet", 4),
        ("c.parquet", 5),
        ("c.parquet", 6),
    }
    ids = {(Path(source).name, line): item_id for (source, line), (*_, item_id) in rows.items()}
    assert ids[("a.jsonl", 1)] == "doc-1" and ids[("a.jsonl", 8)] == "8" and ids[("a.jsonl", 2)] is None
    assert ids[("c.parquet", 1)] == "1" and ids[("c.parquet", 3)] is None  # integer ids as decimal strings


def test_shard_schema_layout_and_manifest(sharded, corpus, legacy_checkpoint):
    manifest = json.loads((sharded / "_manifest.json").read_text())
    names = sorted(path.name for path in sharded.iterdir())
    # a.jsonl: 8 lines -> 3 + 3 + 2; b.jsonl: 5 -> 3 + 2; c.parquet: 7 -> 3 + 3 + 1
    expected = [
        ("a.jsonl", 1, 3),
        ("a.jsonl", 4, 6),
        ("a.jsonl", 7, 8),
        ("b.jsonl", 1, 3),
        ("b.jsonl", 4, 5),
        ("c.parquet", 1, 3),
        ("c.parquet", 4, 6),
        ("c.parquet", 7, 7),
    ]
    assert names == ["_manifest.json"] + [f"part-{index:05d}.parquet" for index in range(8)]
    for index, (entry, (source, first, last)) in enumerate(zip(manifest["shards"], expected)):
        path = sharded / f"part-{index:05d}.parquet"
        table = pq.read_table(path)
        assert [(field.name, str(field.type)) for field in table.schema] == SCHEMA
        assert table.column("line").to_pylist() == list(range(first, last + 1))  # line order
        assert set(table.column("source").to_pylist()) == {str(corpus / source)}
        ok = table.column("ok").to_pylist()
        assert entry == {
            "name": path.name,
            "source": str(corpus / source),
            "first_line": first,
            "last_line": last,
            "rows": last - first + 1,
            "ok": sum(ok),
            "failed": len(ok) - sum(ok),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "complete": True,
        }
    assert manifest["counts"] == {"rows": 20, "ok": 12, "failed": 8, "shards": 8, "complete_shards": 8}
    assert manifest["format"] == 1 and manifest["shard_size"] == 3 and manifest["instruction"] is None
    assert manifest["model"] == str(legacy_checkpoint.resolve()) and manifest["dim"] == 64
    assert manifest["settings"]["video_frames"] == 4 and len(manifest["model_fingerprint"]) == 64
    assert {"unite-embed", "torch", "transformers", "pyarrow"} <= set(manifest["versions"])
    sources = manifest["sources"]
    assert [(s["source"], s["kind"], s["rows"]) for s in sources] == [
        (str(corpus / "a.jsonl"), "jsonl", 8),
        (str(corpus / "b.jsonl"), "jsonl", 5),
        (str(corpus / "c.parquet"), "parquet", 7),
    ]
    for record in sources:
        stat = Path(record["path"]).stat()
        assert record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns


def test_a_rerun_of_a_complete_run_writes_nothing(sharded, corpus, legacy_checkpoint, capsys):
    before = {path.name: path.stat().st_mtime_ns for path in sharded.glob("part-*")}
    sources = [corpus / "a.jsonl", corpus / "b.jsonl", corpus / "c.parquet"]
    assert main(_bulk_argv(sources, str(sharded), legacy_checkpoint, "--shard-size", "3", "--on-error", "skip")) == 0
    assert {path.name: path.stat().st_mtime_ns for path in sharded.glob("part-*")} == before
    assert "8 shards (8 already complete, 0 written)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ resuming


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return children


def _pool_workers(driver: int) -> list[int]:
    """The preparation workers of a driver: children of its forkserver (or, with spawn, its own children)."""
    children = _children()
    workers = []
    for child in children.get(driver, []):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in command:
            workers += children.get(child, [])
        elif b"resource_tracker" not in command:
            workers.append(child)
    return workers


def _complete(folder: Path) -> dict[str, int]:
    """Shards the manifest lists complete, with their file's mtime."""
    try:
        manifest = json.loads((folder / "_manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    names = [entry["name"] for entry in manifest["shards"] if entry["complete"]]
    return {name: (folder / name).stat().st_mtime_ns for name in names}


def _wait(condition, process, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "timed out: " + log.read_text()
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_killing_a_worker_then_the_driver_loses_only_unfinished_shards(tmp_path, corpus, legacy_checkpoint):
    kinds = [
        {"text": "item {i}"},
        {"image": "a.png"},
        {"text": "photo {i} <|IMAGE|>", "image": "b.jpg"},
        {"video": "clip.mp4"},
        {"video": ["frame0.png", "frame1.png", "frame2.png"]},
    ]
    items = [{k: v.format(i=i) if k == "text" else v for k, v in kinds[i % 5].items()} | {"id": i} for i in range(80)]
    for name in MEDIA:
        shutil.copy(corpus / name, tmp_path / name)
    source = _lines(tmp_path / "items.jsonl", items)
    reference = {str(source): _single_process(source, legacy_checkpoint, tmp_path / "reference.parquet")}
    out = tmp_path / "out"
    argv = _bulk_argv([source], f"{out}/", legacy_checkpoint, "--shard-size", "4")
    log = tmp_path / "driver.log"  # a file, not a pipe: nothing the driver writes can block it
    with log.open("w") as handle:
        driver = subprocess.Popen([sys.executable, "-m", "unite.cli.main", *argv], stdout=handle, stderr=handle)
    try:
        _wait(lambda: len(_complete(out)) >= 1, driver, log)
        workers = _pool_workers(driver.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)  # a pool child, mid-run
        done_at_kill = len(_complete(out))
        # recovered: more shards are written than the chunks held when the worker died (at most 2 * 2 + 2)
        _wait(lambda: len(_complete(out)) >= done_at_kill + 7, driver, log)
        workers = _pool_workers(driver.pid)
        driver.kill()  # SIGKILL of the driver
        driver.wait()
    finally:
        driver.kill()
        driver.wait()  # reaped: a zombie driver would keep its workers waiting
    kept = _complete(out)
    assert 1 <= len(kept) < 20, "the run ended before it was killed; give it more work"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived their driver"

    assert main(argv) == 0  # the same command resumes
    for name, mtime in kept.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was complete and got written again"
    rows = _rows(out)
    _assert_equal_to_reference(rows, reference)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"] == {"rows": 80, "ok": 80, "failed": 0, "shards": 20, "complete_shards": 20}
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no temporary file left


def _poisoned_task(records, source, *args):
    """A worker's task that dies (SIGKILL) on the item "poison", as a decoder crash or the OOM killer would."""
    if any(record.item is not None and record.item.text == "poison" for record in records):
        os.kill(os.getpid(), signal.SIGKILL)
    return _ORIGINAL_TASK(records, source, *args)


def test_an_item_that_kills_its_worker_fails_alone(tmp_path, legacy_checkpoint, monkeypatch):
    items = [{"text": f"item {i}"} for i in range(1, 13)]
    items[5] = {"text": "poison"}  # line 6
    source = _lines(tmp_path / "items.jsonl", items)
    plain = _lines(tmp_path / "plain.jsonl", items[:5] + [{"text": "stand-in"}] + items[6:])
    expected = _single_process(plain, legacy_checkpoint, tmp_path / "plain.parquet")
    monkeypatch.setattr(engine_local, "_prepare_task", _poisoned_task)  # pickled by name, run by the workers
    out = tmp_path / "out"
    assert main(_bulk_argv([source], f"{out}/", legacy_checkpoint, "--on-error", "skip", "--shard-size", "5")) == 0
    rows = _rows(out)
    assert sorted(line for _, line in rows) == list(range(1, 13))
    for (_, line), (ok, embedding, error, _) in rows.items():
        if line == 6:
            assert not ok and error == f"{source}:6: {engine_local.WORKER_DIED} (exit code -9)"
        else:
            assert ok and error is None
            assert float(np.dot(embedding, expected[line][1])) >= 0.99999


# ----------------------------------------------------------------------------------------- refusing to mix


def _other_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """A copy of ``checkpoint`` with every tensor changed a little: other weights, another fingerprint."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, folder)
    for path in folder.glob("*.safetensors"):
        save_file({key: (tensor * 1.01).contiguous() for key, tensor in load_file(path).items()}, path)
    return folder


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


def test_a_different_job_is_refused_naming_what_differs(tmp_path, legacy_checkpoint, capsys):
    source = _lines(tmp_path / "items.jsonl", [{"text": "one"}, {"text": "two"}, {"text": "three"}])
    out = tmp_path / "out"
    argv = _bulk_argv([source], f"{out}/", legacy_checkpoint, "--shard-size", "2")
    assert main(argv) == 0
    before = _snapshot(out)
    other = _other_checkpoint(legacy_checkpoint, tmp_path / "other")
    changes = {
        "model": (
            _bulk_argv([source], f"{out}/", other, "--shard-size", "2"),
            f"model {legacy_checkpoint.resolve()} (fingerprint ",
        ),
        "settings": (
            [*argv, "--image-max-pixels", str(300 * 28 * 28)],
            f"settings differ: image_max_pixels {1280 * 28 * 28} there, {300 * 28 * 28} now",
        ),
        "instruction": ([*argv, "--instruction", "Find it."], "instruction None there, 'Find it.' now"),
        "shard size": ([*argv, "--shard-size", "3"], "shard size 2 there, 3 now"),
        "source": (argv, f"source {source} changed (rows 3 -> 4, size "),
    }
    capsys.readouterr()
    for change, (changed_argv, named) in changes.items():
        if change == "source":
            with source.open("a") as handle:
                handle.write('{"text": "four"}\n')
        assert main(changed_argv) == 1, change
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"unite: error: {out}/_manifest.json holds shards of another job: "), err
        assert named in err, (change, err)
        assert _snapshot(out) == before  # nothing overwritten


def test_shards_without_a_manifest_are_not_overwritten(tmp_path, legacy_checkpoint, capsys):
    source = _lines(tmp_path / "items.jsonl", [{"text": "one"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"someone else's")
    assert main(_bulk_argv([source], str(out), legacy_checkpoint)) == 1  # an existing folder means shards
    assert "holds part-*.parquet files but no _manifest.json" in capsys.readouterr().err
    assert (out / "part-00000.parquet").read_bytes() == b"someone else's"


# ---------------------------------------------------------------------------------------- errors, URIs


def test_on_error_raise_stops_at_the_first_bad_line(tmp_path, corpus, legacy_checkpoint, capsys):
    lines = [{"text": f"line {i}"} for i in range(1, 11)]
    lines[4] = {"image": "missing.png"}  # line 5: found by a worker
    lines[7] = "{not json"  # line 8: found by the reader, earlier than line 5 is prepared
    source = _lines(tmp_path / "items.jsonl", lines)
    out = tmp_path / "out"
    assert main(_bulk_argv([source], f"{out}/", legacy_checkpoint, "--shard-size", "2")) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"unite: error: {source}:5: {tmp_path / 'missing.png'}: file not found"
    manifest = json.loads((out / "_manifest.json").read_text())
    complete = {entry["name"] for entry in manifest["shards"] if entry["complete"]}
    assert {"part-00000.parquet", "part-00001.parquet"} <= complete  # lines 1-4: done before the bad line
    assert "part-00002.parquet" not in complete and not (out / "part-00002.parquet").exists()
    assert "part-00003.parquet" not in complete
    for name in complete:
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == manifest["shards"][int(name[5:10])]["sha256"]


def test_output_to_a_file_uri(tmp_path, legacy_checkpoint):
    source = _lines(tmp_path / "items.jsonl", [{"text": "one"}, {"text": "two"}, {"text": "three"}])
    out = tmp_path / "uri out"
    assert main(_bulk_argv([source], out.as_uri() + "/", legacy_checkpoint, "--shard-size", "2")) == 0
    assert sorted(path.name for path in out.iterdir()) == ["_manifest.json", "part-00000.parquet", "part-00001.parquet"]
    local = tmp_path / "local"
    assert main(_bulk_argv([source], f"{local}/", legacy_checkpoint, "--shard-size", "2")) == 0
    for name in ("part-00000.parquet", "part-00001.parquet"):
        a, b = pq.read_table(out / name), pq.read_table(local / name)
        assert a.column("line").to_pylist() == b.column("line").to_pylist()
        np.testing.assert_allclose(a.column("embedding").to_pylist(), b.column("embedding").to_pylist(), atol=1e-6)


def test_file_output_flags_and_sources_stay_apart(tmp_path, legacy_checkpoint, capsys):
    source = _lines(tmp_path / "items.jsonl", [{"text": "one"}])
    base = ["encode", str(source), "--model", str(legacy_checkpoint), "--device", "cpu"]
    assert main(["encode", str(source), str(source), *base[2:], "--output", str(tmp_path / "o.npy")]) == 1
    assert "takes one ITEMS.jsonl, got 2 sources" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "o.npy"), "--shard-size", "5"]) == 1
    assert "--shard-size applies to a folder of shards" in capsys.readouterr().err
    assert main([*base, "--output", f"{tmp_path / 'shards'}/", "--precision", "int8"]) == 1
    assert "--precision applies to an --output file" in capsys.readouterr().err


# ------------------------------------------------------------------------ two replicas (CPU stand-ins for GPUs)


def test_two_model_replicas_share_the_work(corpus, reference, legacy_checkpoint, tmp_path):
    from unite import UniteEncoder

    replicas = [UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", video_frames=4) for _ in range(2)]
    job = BulkJob(
        model=str(legacy_checkpoint), device="cpu", setting_overrides={"video_frames": 4}, on_error="skip", workers=2
    )
    engine = engine_local.LocalEngine(job, encoders=replicas)
    sources = [str(corpus / "a.jsonl"), str(corpus / "b.jsonl"), str(corpus / "c.parquet")]
    summary = run_bulk(
        sources, f"{tmp_path / 'out'}/", job, shard_size=3, show_progress=False, engine_factory=lambda _: engine
    )
    _assert_equal_to_reference(_rows(tmp_path / "out"), reference)
    models = {stats.name: stats.items for stats in summary.workers if stats.name.startswith("model")}
    assert sorted(models) == ["model (cpu, replica 0)", "model (cpu, replica 1)"] and all(models.values())
    assert sum(models.values()) == summary.items == 20


def test_replica_devices():
    assert engine_local.replica_devices("cpu", None) == ["cpu"]
    assert engine_local.replica_devices(None, 0) == ["cpu"]
    with pytest.raises(ConfigError, match="--engine ray"):
        engine_local.replica_devices(None, 2)
    with pytest.raises(ConfigError, match="needs a GPU"):
        engine_local.replica_devices("cpu", 0.5)


# ----------------------------------------------------------------------------------------- sources, plan


def test_globs_expand_sorted_and_a_file_counts_once(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text('"x"\n')
    pattern = str(tmp_path / "*.jsonl")
    assert expand_sources([pattern, str(tmp_path / "c.txt")]) == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
        str(tmp_path / "c.txt"),
    ]
    with pytest.raises(InputError, match=r"nothing\*\.jsonl: the glob matches no file"):
        expand_sources([str(tmp_path / "nothing*.jsonl")])
    with pytest.raises(ConfigError, match="the same file as"):
        expand_sources([pattern, str(tmp_path / "a.jsonl")])
    with pytest.raises(InputError, match="file not found"):
        expand_sources([str(tmp_path / "none.jsonl")])


def test_the_plan_cuts_each_source_into_runs_of_shard_size():
    def source(name: str, rows: int) -> SourceFile:
        return SourceFile(name, f"/{name}", "parquet", rows, 0, 0)

    plan = plan_shards([source("a", 7), source("empty", 0), source("c", 3)], 3)
    assert [(s.index, s.name, s.source, s.first_line, s.last_line) for s in plan] == [
        (0, "part-00000.parquet", "a", 1, 3),
        (1, "part-00001.parquet", "a", 4, 6),
        (2, "part-00002.parquet", "a", 7, 7),
        (3, "part-00003.parquet", "c", 1, 3),
    ]


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + b'"one"\n"two"\r\n\n{bad\n"five"\n"six"\n"seven"',  # BOM, CRLF, blank, no final newline
        b'"one"\n' * 7,
    ],
    ids=["hostile", "plain"],
)
def test_a_shard_read_from_its_offset_equals_the_whole_file_read(tmp_path, content):
    path = tmp_path / "items.jsonl"
    path.write_bytes(content)
    whole = read_item_lines(path)
    (scanned,) = scan_sources([str(path)], 3)
    assert scanned.rows == len(whole) == 7 and len(scanned.offsets) == 3
    shards = plan_shards([scanned], 3)
    read = [record for shard in shards for record in read_rows(shard)]
    assert [(r.line, r.item, r.id, str(r.error)) for r in read] == [(r.line, r.item, r.id, str(r.error)) for r in whole]


def test_a_parquet_source_with_other_columns_is_refused(tmp_path):
    pq.write_table(pa.table({"text": ["a"], "url": ["http://x"]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="x.parquet: unknown column"):
        scan_sources([str(tmp_path / "x.parquet")], 10)


# ------------------------------------------------------------------------------------------- the two stages


def test_embed_prepared_equals_encode_and_retries_a_failing_batch_one_by_one(encoder, monkeypatch):
    from unite import UniteEncoder
    from unite.types import Item

    items = [Item(text="a"), Item(text="b b b b b b"), Item(text="c c")]
    features = [encoder.processor.prepare(item) for item in items]
    result = encoder.embed_prepared(features, batch_size=2)
    assert result.ok.all() and result.errors == []
    np.testing.assert_allclose(result.embeddings, encoder.encode(items), atol=1e-5)
    embed = UniteEncoder._embed

    def fragile(self, batch):
        if len(batch) > 1 or len(batch[0].input_ids) == len(features[1].input_ids):
            raise RuntimeError("out of memory (simulated)")
        return embed(self, batch)

    monkeypatch.setattr(UniteEncoder, "_embed", fragile)
    result = encoder.embed_prepared(features, batch_size=2)
    assert result.ok.tolist() == [True, False, True]
    assert result.errors == [(1, "the model failed on this item alone: RuntimeError: out of memory (simulated)")]
    assert not result.embeddings[1].any()
