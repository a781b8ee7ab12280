"""``unite encode SOURCE... --output OUT_DIR/ --engine ray``: the Ray Data pipeline gives the shards that one
process gives, every line once; a killed driver or model actor loses only unfinished shards; the refusal to mix
models and ``--on-error raise`` hold on this engine too.

Ray here is one local instance of 2 CPUs without a dashboard, started once for the module; the engine uses it
(a process already connected keeps its connection). The driver-kill test runs ``unite`` in a subprocess that
starts its own instance, as the command does by default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
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
ray = pytest.importorskip("ray")

from unite.bulk import engine_ray  # noqa: E402
from unite.bulk.engine import BulkJob  # noqa: E402
from unite.bulk.plan import ShardSpec  # noqa: E402
from unite.bulk.run import run_bulk  # noqa: E402
from unite.cli.main import main  # noqa: E402
from unite.errors import ConfigError, InputError, MediaError  # noqa: E402

SETTINGS = ["--video-frames", "4"]
MEDIA = ("a.png", "b.jpg", "rgba.png", "clip.mp4", "frame0.png", "frame1.png", "frame2.png")
MODEL_ACTOR = b"ray::MapWorker(MapBatches(_ModelActor))"


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media_dir) -> Path:
    """Two JSON lines sources and a Parquet source (row groups of 2) with text, image, video, fused items and
    bad lines; ``c.jsonl`` holds the Parquet rows as JSON lines for the single-process reference."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    for name in MEDIA:
        shutil.copy(media_dir / name, folder / name)
    _lines(
        folder / "a.jsonl",
        [
            {"text": "a red circle", "id": "doc-1"},
            {"image": "a.png"},
            "{not json",  # 3: not JSON
            {"image": "missing.png"},  # 4: missing media
            {"text": "<|IMAGE|> and a clip <|VIDEO|>", "image": "b.jpg", "video": "clip.mp4"},
            "",  # 6: empty line
            {"video": ["frame0.png", "frame1.png", "frame2.png"], "id": 7},
        ],
    )
    _lines(
        folder / "b.jsonl",
        [
            {"video": "clip.mp4", "id": "v"},
            {"text": "plain text only"},
            {"text": "<|IMAGE|><|IMAGE|>", "image": "a.png"},
        ],
    )  # b:3: two placeholders, one image
    rows = [
        {"text": "a photo", "image": None, "id": 1},
        {"text": None, "image": "rgba.png", "id": None},
        {"text": None, "image": None, "id": 3},  # 3: empty item
        {"text": "<|IMAGE|> fused", "image": "b.jpg", "id": None},
    ]
    table = pa.table(
        {"text": [r["text"] for r in rows], "image": [r["image"] for r in rows]}
        | {"id": pa.array([r["id"] for r in rows], type=pa.int64())}
    )
    pq.write_table(table, folder / "c.parquet", row_group_size=2)
    _lines(folder / "c.jsonl", [{k: v for k, v in r.items() if v is not None} for r in rows])
    return folder


FAILED_LINES = {"a.jsonl": {3, 4, 6}, "b.jsonl": {3}, "c.parquet": {3}}  # by the rules of docs/encoding.md


def _single_process(source: Path, checkpoint: Path, out: Path) -> dict[int, tuple]:
    """Today's ``unite encode SOURCE --output OUT.parquet --on-error skip``: {line: (ok, embedding, error)}."""
    argv = ["encode", str(source), "--model", str(checkpoint), "--output", str(out), "--device", "cpu"]
    assert main([*argv, "--on-error", "skip", "--no-progress", *SETTINGS]) == 0
    table = pq.read_table(out).to_pydict()
    errors = [json.loads(line) for line in out.with_name(out.stem + ".errors.jsonl").read_text().splitlines()]
    errors = {entry["line"]: entry["error"] for entry in errors}
    return {line: (ok, emb, errors.get(line)) for line, ok, emb in zip(table["line"], table["ok"], table["embedding"])}


@pytest.fixture(scope="module")
def reference(corpus, legacy_checkpoint, tmp_path_factory) -> dict[str, dict[int, tuple]]:
    out = tmp_path_factory.mktemp("ray-reference")
    found = {
        name: _single_process(corpus / f"{name}.jsonl", legacy_checkpoint, out / f"{name}.parquet") for name in "abc"
    }
    parquet = str(corpus / "c.parquet")
    renamed = {
        line: (ok, emb, error and error.replace(str(corpus / "c.jsonl"), parquet))
        for line, (ok, emb, error) in found["c"].items()
    }
    return {str(corpus / "a.jsonl"): found["a"], str(corpus / "b.jsonl"): found["b"], parquet: renamed}


def _argv(sources: list, out: str, checkpoint: Path, *extra: str) -> list[str]:
    model = ["--model", str(checkpoint), "--device", "cpu", "--no-progress", *SETTINGS]
    return ["encode", *map(str, sources), "--output", out, *model, *extra]


def _rows(folder: Path) -> dict[tuple[str, int], tuple]:
    """Every row of every shard: {(source, line): (ok, embedding, error, id)}; a row seen twice fails."""
    rows: dict[tuple[str, int], tuple] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path).to_pydict()
        for key in zip(table["source"], table["line"], table["ok"], table["embedding"], table["error"], table["id"]):
            assert key[:2] not in rows, f"{key[0]}:{key[1]} is in two rows"
            rows[key[:2]] = key[2:]
    return rows


def _assert_same_rows(rows: dict, reference: dict[str, dict[int, tuple]]) -> None:
    assert set(rows) == {(source, line) for source, lines in reference.items() for line in lines}  # all, once
    for (source, line), (ok, embedding, error, _) in rows.items():
        ref_ok, ref_embedding, ref_error = reference[source][line]
        assert (ok, error) == (ref_ok, ref_error), (source, line)
        if ok:
            cosine = np.dot(embedding, ref_embedding) / np.linalg.norm(embedding) / np.linalg.norm(ref_embedding)
            assert cosine >= 0.99999, (source, line, cosine)
        else:
            assert embedding == []


def _complete(folder: Path) -> dict[str, int]:
    """Shards the manifest lists complete, with their file's mtime."""
    try:
        manifest = json.loads((folder / "_manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return {e["name"]: (folder / e["name"]).stat().st_mtime_ns for e in manifest["shards"] if e["complete"]}


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every process: {pid: (parent pid, command line)}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes())
            except (OSError, IndexError, ValueError):
                continue
    return found


def _pids(worker_names) -> set[int]:
    """The process ids in worker names such as ``model (10.0.0.1, pid 123, cpu)``."""
    return {int(name.split("pid ")[1].split(",")[0].rstrip(")")) for name in worker_names}


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- the shards


@pytest.fixture(scope="module")
def ray_sharded(corpus, legacy_checkpoint, tmp_path_factory):
    """The corpus through ``--engine ray`` (shards of 3), as ``unite encode`` would run it: (folder, summary)."""
    out = tmp_path_factory.mktemp("ray-sharded") / "out"
    sources = [str(corpus / name) for name in ("a.jsonl", "b.jsonl", "c.parquet")]
    job = BulkJob(
        model=str(legacy_checkpoint), device="cpu", setting_overrides={"video_frames": 4}, on_error="skip", engine="ray"
    )
    summary = run_bulk(sources, f"{out}/", job, shard_size=3, show_progress=False)
    return out, summary


def test_ray_shards_equal_single_process_and_the_local_engine(ray_sharded, corpus, reference, legacy_checkpoint):
    out, summary = ray_sharded
    rows = _rows(out)
    _assert_same_rows(rows, reference)
    failed = {(Path(source).name, line) for (source, line), (ok, *_) in rows.items() if not ok}
    assert failed == {(name, line) for name, lines in FAILED_LINES.items() for line in lines}
    ids = {(Path(source).name, line): row[3] for (source, line), row in rows.items()}
    assert ids[("a.jsonl", 1)] == "doc-1" and ids[("a.jsonl", 7)] == "7" and ids[("a.jsonl", 2)] is None
    assert ids[("c.parquet", 1)] == "1" and ids[("c.parquet", 2)] is None  # an integer id as its decimal string

    local = out.parent / "local"
    sources = [corpus / name for name in ("a.jsonl", "b.jsonl", "c.parquet")]
    argv = _argv(sources, f"{local}/", legacy_checkpoint, "--engine", "local", "--workers", "2")
    assert main([*argv, "--shard-size", "3", "--on-error", "skip"]) == 0
    _assert_same_rows(_rows(local), reference)
    manifests = [json.loads((folder / "_manifest.json").read_text()) for folder in (out, local)]
    assert (
        manifests[0]["counts"]
        == manifests[1]["counts"]
        == {
            "rows": 14,
            "ok": 9,
            "failed": 5,
            "shards": 6,  # a: 3 + 3 + 1, b: 3, c: 3 + 1
            "complete_shards": 6,
        }
    )

    models = {w.name: w.items for w in summary.workers if w.name.startswith("model (")}
    prepare = {w.name: w.items for w in summary.workers if w.name.startswith("prepare (")}
    assert len(models) == 1 and next(iter(models)).endswith(", cpu)")  # one replica, on the CPU
    assert not _pids(models) & _pids(prepare)  # the CPU stage runs in its own processes, not in the model actor
    assert sum(models.values()) == sum(prepare.values()) == summary.items == 14 and summary.items_failed == 5
    assert all(w.busy_seconds > 0 for w in summary.workers)


def test_a_rerun_with_another_model_is_refused_through_ray(ray_sharded, corpus, legacy_checkpoint, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out, _ = ray_sharded
    other = shutil.copytree(legacy_checkpoint, tmp_path / "other")
    for path in other.glob("*.safetensors"):
        save_file({key: (tensor * 1.01).contiguous() for key, tensor in load_file(path).items()}, path)
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.iterdir()}
    sources = [corpus / name for name in ("a.jsonl", "b.jsonl", "c.parquet")]
    argv = _argv(sources, f"{out}/", other, "--engine", "ray", "--shard-size", "3", "--on-error", "skip")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"unite: error: {out}/_manifest.json holds shards of another job: model ")
    assert {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.iterdir()} == before


def test_on_error_raise_stops_at_the_first_bad_line(tmp_path, media_dir, legacy_checkpoint, capsys):
    lines = [{"text": f"line {i}"} for i in range(1, 11)]
    lines[4] = {"image": "missing.png"}  # line 5: found by the CPU stage
    lines[7] = "{not json"  # line 8: found by the reader, in a later shard
    source = _lines(tmp_path / "items.jsonl", lines)
    out = tmp_path / "out"
    assert main(_argv([source], f"{out}/", legacy_checkpoint, "--engine", "ray", "--shard-size", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"unite: error: {source}:5: {tmp_path / 'missing.png'}: file not found"
    complete = _complete(out)
    assert {"part-00000.parquet", "part-00001.parquet"} <= set(complete)  # lines 1-4, before the bad line
    for name in ("part-00002.parquet", "part-00003.parquet"):  # lines 5-6 and 7-8 hold failures
        assert name not in complete and not (out / name).exists()
    _assert_no_model_actor_left()  # the pipeline was stopped


def _assert_no_model_actor_left(seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [pid for pid, (_, command) in _processes().items() if command.startswith(MODEL_ACTOR) and _alive(pid)]:
            return
        time.sleep(0.2)
    raise AssertionError("a model actor outlived the run")


# ------------------------------------------------------------------------------------------------ resuming


MIXED_ITEMS = 64


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, media_dir, legacy_checkpoint) -> tuple[Path, dict[str, dict[int, tuple]]]:
    """64 texts, images and fused items with ids, and their single-process rows: (source, reference)."""
    folder = tmp_path_factory.mktemp("ray-mixed")
    for name in ("a.png", "b.jpg"):
        shutil.copy(media_dir / name, folder / name)
    kinds = [{"text": "item {i}"}, {"image": "a.png"}, {"text": "photo {i} <|IMAGE|>", "image": "b.jpg"}]
    items = [{k: v.format(i=i) for k, v in kinds[i % 3].items()} | {"id": i} for i in range(MIXED_ITEMS)]
    source = _lines(folder / "items.jsonl", items)
    return source, {str(source): _single_process(source, legacy_checkpoint, folder / "reference.parquet")}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's processes through /proc")
def test_killing_the_driver_loses_only_unfinished_shards(tmp_path, mixed, legacy_checkpoint):
    source, expected = mixed
    out = tmp_path / "out"
    argv = _argv([source], f"{out}/", legacy_checkpoint, "--engine", "ray", "--shard-size", "2", "--batch-size", "1")
    driver = subprocess.Popen(
        [sys.executable, "-m", "unite.cli.main", *argv, "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not _complete(out):
            assert driver.poll() is None, driver.communicate()[1]
            assert time.monotonic() < deadline, "no shard was written"
            time.sleep(0.02)
        actors = [pid for pid, (_, command) in _processes().items() if command.startswith(MODEL_ACTOR)]
        driver.kill()  # SIGKILL
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
    kept = _complete(out)
    assert 1 <= len(kept) < MIXED_ITEMS // 2, "the run ended before it was killed; give it more work"
    assert actors, "the driver's model actor was not found"
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in actors) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in actors), "the model actor outlived its driver's Ray instance"

    assert main(argv) == 0  # the same command resumes (here on the module's Ray instance)
    for name, mtime in kept.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was complete and got written again"
    _assert_same_rows(_rows(out), expected)
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    shards = MIXED_ITEMS // 2
    assert counts == {"rows": MIXED_ITEMS, "ok": MIXED_ITEMS, "failed": 0, "shards": shards, "complete_shards": shards}
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no temporary file left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the model actor through /proc")
def test_a_killed_model_actor_is_restarted_and_the_run_completes(tmp_path, mixed, legacy_checkpoint):
    source, expected = mixed
    killed: list[int] = []

    def engine_factory(job: BulkJob) -> engine_ray.RayEngine:
        engine = engine_ray.RayEngine(job)
        run = engine.run

        def run_and_kill(shards, on_shard_done, progress):
            def on_shard_done_then_kill(spec, rows):
                on_shard_done(spec, rows)
                if not killed:
                    (actor,) = [pid for pid, (_, cmd) in _processes().items() if cmd.startswith(MODEL_ACTOR)]
                    os.kill(actor, signal.SIGKILL)
                    killed.append(actor)

            return run(shards, on_shard_done_then_kill, progress)

        engine.run = run_and_kill
        return engine

    job = BulkJob(model=str(legacy_checkpoint), device="cpu", batch_size=1, engine="ray")
    summary = run_bulk([str(source)], f"{tmp_path / 'out'}/", job, shard_size=2, engine_factory=engine_factory)
    assert killed and summary.written == summary.shards == MIXED_ITEMS // 2
    _assert_same_rows(_rows(tmp_path / "out"), expected)
    models = [w.name for w in summary.workers if w.name.startswith("model (")]
    assert killed[0] in _pids(models) and len(models) == 2  # the killed actor did work, then its restart did


# --------------------------------------------------------------------------------- the driver's bookkeeping


def _spec(index: int, first: int, last: int) -> ShardSpec:
    return ShardSpec(index, f"part-{index:05d}.parquet", "s.jsonl", "/s.jsonl", "jsonl", first, last, 0)


def _block(rows: list[tuple[int, int]], failed: dict[tuple[int, int], str] | None = None) -> dict[str, np.ndarray]:
    """An output block of the model stage: rows (shard, row) with embedding [shard, row], failures as given."""
    failed = failed or {}
    count = len(rows)
    errors = engine_ray._error_columns([MediaError(failed[key]) if key in failed else None for key in rows])
    ids = engine_ray._id_columns([f"{shard}-{row}" if row % 2 else None for shard, row in rows])
    return {
        "shard": np.array([shard for shard, _ in rows], np.int64),
        "row": np.array([row for _, row in rows], np.int64),
        "ok": np.array([key not in failed for key in rows]),
        "embedding": np.array([[shard, row] for shard, row in rows], np.float32),
        "fatal": engine_ray._objects([b""] * count),
        "prepared_by": engine_ray._objects(["prepare (p)"] * count),
        "prepare_seconds": np.full(count, 0.5),
        "embedded_by": engine_ray._objects(["model (m)"] * count),
        "embed_seconds": np.full(count, 0.25),
        **ids,
        **errors,
    }


def _collector(specs, on_error="skip"):
    done, progress = [], []
    collector = engine_ray._Collector(
        specs, 2, on_error, lambda spec, rows: done.append((spec.index, rows)), progress.append
    )
    return collector, done, progress


def test_rows_arriving_in_any_order_are_regrouped_into_shards_in_line_order():
    specs = [_spec(0, 1, 3), _spec(1, 4, 5)]
    collector, done, progress = _collector(specs)
    assert not collector.add(_block([(1, 1), (0, 2)], {(0, 2): "s.jsonl:3: bad"}))
    assert not done
    assert not collector.add(_block([(0, 0), (1, 0), (1, 1)]))  # (1, 1) again, as a retried task sends it
    assert [index for index, _ in done] == [1]
    collector.add(_block([(0, 1)]))
    collector.finish()
    assert [index for index, _ in done] == [1, 0] and progress == [2, 2, 1]
    shard0 = dict(done)[0]
    assert shard0.lines == [1, 2, 3] and shard0.ids == [None, "0-1", None]
    assert shard0.ok.tolist() == [True, True, False] and shard0.embeddings[:2].tolist() == [[0, 0], [0, 1]]
    assert shard0.errors[:2] == [None, None] and type(shard0.errors[2]) is MediaError
    assert str(shard0.errors[2]) == "s.jsonl:3: bad"
    assert collector.items == 5 and collector.failed == 1
    stats = {w.name: (w.items, w.busy_seconds) for w in collector.workers.values()}
    assert stats == {"prepare (p)": (5, 2.5), "model (m)": (5, 1.25)}


def test_on_error_raise_waits_for_the_rows_before_the_first_failure():
    specs = [_spec(0, 1, 2), _spec(1, 3, 4), _spec(2, 5, 6)]
    collector, done, _ = _collector(specs, on_error="raise")
    assert not collector.add(_block([(2, 0), (2, 1)], {(2, 0): "s.jsonl:5: late"}))  # a later failure first
    assert not collector.add(_block([(1, 1)], {(1, 1): "s.jsonl:4: early"}))  # an earlier one; 0 and 1:0 missing
    assert not collector.add(_block([(0, 0), (0, 1)]))
    assert collector.add(_block([(1, 0)]))  # every row before line 4 is in: stop
    assert [index for index, _ in done] == [0]  # shards with a failure are not written
    with pytest.raises(MediaError, match=r"^s\.jsonl:4: early$"):
        collector.finish()


def test_an_error_outside_the_rows_is_raised_as_it_is():
    collector, _, _ = _collector([_spec(0, 1, 1)])
    block = _block([(0, 0)])
    block["fatal"] = engine_ray._objects([pickle.dumps(InputError("s.jsonl: cannot read"))])
    with pytest.raises(InputError, match=r"^s\.jsonl: cannot read$"):
        collector.add(block)


def test_a_shard_that_cannot_be_read_travels_down_the_stages_and_fails_the_run(tmp_path, legacy_checkpoint):
    """The three stage functions as Ray runs them, called here in turn: the read error is data, not a Ray task
    failure, and reaches the driver as it was raised."""
    source = _lines(tmp_path / "items.jsonl", [{"text": "one"}, {"text": "two"}])
    beyond = ShardSpec(0, "part-00000.parquet", str(source), str(source), "jsonl", 1, 3, 0)  # 3 of 2 lines
    job = BulkJob(model=str(legacy_checkpoint), device="cpu", engine="ray")
    engine = engine_ray.RayEngine(job)  # the module's Ray instance: nothing starts, close leaves it
    try:
        folder = str(tmp_path)
        read = engine_ray._read_shards({k: np.array([v]) for k, v in dataclasses.asdict(beyond).items()}, folder)
        settings, tokenizer_folder = engine.model.settings, engine.model.tokenizer_folder
        prepared = engine_ray._prepare_batch(read, folder, engine._tokenizer, tokenizer_folder, settings, None)
        embedded = engine_ray._ModelActor(job, "cpu", folder)(prepared)
    finally:
        engine.close()
    assert len(embedded["shard"]) == 1 and not embedded["ok"].any()
    collector, done, _ = _collector([beyond])
    with pytest.raises(InputError) as raised:
        collector.add(embedded)
    assert str(raised.value) == f"{source}: expected rows 1 to 3, the file ends after 2; it changed while being read"
    assert not done and ray.is_initialized()


def test_a_node_without_the_tokenizer_folder_builds_it_from_the_shipped_files(encoder, tmp_path, monkeypatch):
    from unite.bulk.stages import processor_for

    shipped = engine_ray._Tokenizer.of(encoder)
    assert "tokenizer_config.json" in shipped.files and not any(name.endswith(".safetensors") for name in shipped.files)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    here = shipped.folder_here(str(tmp_path / "not on this node"))
    assert Path(here).parent == tmp_path and shipped.folder_here(str(tmp_path / "not on this node")) == here
    assert sorted(path.name for path in Path(here).iterdir()) == sorted(shipped.files)
    item_ids = processor_for(here, encoder.settings).tokenizer("a red circle")["input_ids"]
    assert item_ids == encoder.tokenizer("a red circle")["input_ids"]
    assert shipped.folder_here(str(tmp_path)) == str(tmp_path)  # a folder this node has is used as it is


# ------------------------------------------------------------------------------------- resources, install


def test_model_replicas_follow_gpus_per_worker():
    replicas = engine_ray.model_replicas
    assert replicas(None, None, 0) == engine_ray._Replicas(1, 0.0, "cpu")  # no GPU: one replica on the CPU
    assert replicas(0, "cpu", 8) == engine_ray._Replicas(1, 0.0, "cpu")
    assert replicas(None, None, 4) == engine_ray._Replicas(4, 1.0, "cuda")  # default: one per GPU
    assert replicas(0.5, None, 4) == engine_ray._Replicas(8, 0.5, "cuda")
    with pytest.raises(ConfigError, match="needs GPUs; the Ray cluster has none"):
        replicas(1, None, 0)
    with pytest.raises(ConfigError, match="a replica runs on one GPU"):
        replicas(2, None, 8)
    with pytest.raises(ConfigError, match="--device cuda:1"):
        replicas(1, "cuda:1", 8)


class _FakeRay:
    def __init__(self, initialized: bool) -> None:
        self.calls: list[dict] = []
        self.initialized = initialized
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **options) -> None:
        self.calls.append(options)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1

    def cluster_resources(self) -> dict:
        return {"CPU": 64.0, "GPU": 2.0}


@pytest.mark.parametrize("case", ["address", "local", "connected"])
def test_ray_address_joins_a_cluster_else_a_local_instance_starts(case, monkeypatch):
    fake = _FakeRay(initialized=case == "connected")
    engine = engine_ray.RayEngine.__new__(engine_ray.RayEngine)
    engine.job = BulkJob(model="m", workers=3, engine="ray", ray_address="auto" if case == "address" else None)
    engine._ray, engine._started_ray, engine._scratch = fake, False, None
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    replicas = engine._connect()
    engine.close()
    if case == "address":
        assert fake.calls == [{"address": "auto", "logging_level": logging.WARNING}] and fake.shutdowns == 1
        assert replicas == engine_ray._Replicas(2, 1.0, "cuda")  # the cluster's 2 GPUs
    elif case == "local":  # --workers 3 CPU-stage tasks, plus the CPU of the one model replica
        assert fake.calls == [
            {"num_cpus": 4, "num_gpus": 0, "include_dashboard": False, "logging_level": logging.WARNING}
        ]
        assert fake.shutdowns == 1 and replicas == engine_ray._Replicas(1, 0.0, "cpu")
    else:
        assert fake.calls == [] and fake.shutdowns == 0  # the caller's connection, left open


def test_without_ray_the_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"^--engine ray needs Ray Data: pip install 'unite-embed\[ray\]'$"):
        engine_ray.import_ray()
