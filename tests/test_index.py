"""Index builds: incremental by content hash, --sync, clips with time ranges, JSONL, both backends, resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from unite.errors import ConfigError, InputError
from unite.index import IndexManifest, build_index, create_store, open_store, scan_folder, scan_jsonl, scan_source
from unite.testing import make_image

pytest.importorskip("lancedb")

NOTES = {"notes/cat.txt": "a cat asleep on a sofa", "notes/sea.md": "stormy clouds over the open sea"}


class CountingEmbed:
    """The encoder's embed callable, counting what it is asked to encode."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.count = 0

    def __call__(self, items):
        self.count += len(items)
        return self.encoder.encode_with_errors(items, show_progress_bar=False)


def make_corpus(folder: Path, media_dir: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(media_dir / "a.png", folder / "a.png")
    (folder / "sub").mkdir()
    shutil.copy(media_dir / "b.jpg", folder / "sub" / "b.jpg")
    shutil.copy(media_dir / "clip.mp4", folder / "clip.mp4")
    for name, text in NOTES.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    (folder / ".hidden.txt").write_text("never indexed")
    (folder / "ignored.bin").write_bytes(b"\0")
    return folder


def manifest_for(encoder, backend: str = "lancedb", **extra) -> IndexManifest:
    return IndexManifest(backend, "tiny", encoder.settings.to_dict(), encoder.embedding_dim, **extra)


@pytest.fixture(params=["lancedb", "qdrant"])
def backend(request):
    if request.param == "qdrant":
        pytest.importorskip("qdrant_client")
    return request.param


def test_build_incremental_and_sync(tmp_path, media_dir, encoder, backend):
    corpus = make_corpus(tmp_path / "corpus", media_dir)
    store = create_store(tmp_path / "index", manifest_for(encoder, backend))
    embed = CountingEmbed(encoder)
    report = build_index(store, scan_folder(corpus), embed)
    expected = {"a.png", "sub/b.jpg", "clip.mp4", "notes/cat.txt", "notes/sea.md"}
    assert set(store.content_hashes()) == expected and report.added == 5 and embed.count == 5

    # the stored vectors are the encoder's own embeddings of the files
    direct = encoder.encode([{"text": NOTES["notes/cat.txt"]}], show_progress_bar=False)[0]
    hit = store.search(direct, k=1)[0]
    assert hit.id == "notes/cat.txt" and hit.score == pytest.approx(1.0, abs=1e-4) and hit.modality == "text"

    # rerun: nothing re-encoded; change one file, add one: only those two encoded
    assert build_index(store, scan_folder(corpus), embed).unchanged == 5 and embed.count == 5
    make_image(40, 50, seed=99).save(corpus / "a.png")
    shutil.copy(media_dir / "grey.png", corpus / "grey.png")
    report = build_index(store, scan_folder(corpus), embed)
    assert (report.updated, report.added, report.unchanged, embed.count) == (1, 1, 4, 7)

    # deletions are kept without --sync, removed with it
    (corpus / "sub" / "b.jpg").unlink()
    assert build_index(store, scan_folder(corpus), embed).deleted == 0 and store.get("sub/b.jpg") is not None
    report = build_index(store, scan_folder(corpus), embed, sync=True)
    assert report.deleted == 1 and store.get("sub/b.jpg") is None and store.count() == 5 and embed.count == 7
    store.close()


def test_modality_filter_inside_the_store(tmp_path, media_dir, encoder, backend):
    store = create_store(tmp_path / "index", manifest_for(encoder, backend))
    build_index(store, scan_folder(make_corpus(tmp_path / "corpus", media_dir)), CountingEmbed(encoder))
    query = encoder.encode(["a cat"], show_progress_bar=False)[0]
    assert {hit.modality for hit in store.search(query, k=10)} == {"text", "image", "video"}
    for name, bits in (("image", 2), ("video", 4), ("text", 1)):
        hits = store.search(query, k=10, modality=bits)
        assert hits and {hit.modality for hit in hits} == {name}
        assert store.search(query, k=10, modality=name) == hits
    scores = [hit.score for hit in store.search(query, k=10)]
    assert scores == sorted(scores, reverse=True)
    store.close()


def test_clips_with_time_ranges(tmp_path, media_dir, encoder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(media_dir / "long.mp4", corpus / "long.mp4")  # 60 frames at 10 fps: 6 s
    entries = scan_folder(corpus, clip_seconds=2.5, settings=encoder.settings)
    assert [(e.id, e.start, e.end) for e in entries] == [
        ("long.mp4#t=0,2.5", 0.0, 2.5),
        ("long.mp4#t=2.5,5", 2.5, 5.0),
        ("long.mp4#t=5,6", 5.0, 6.0),
    ]
    store = create_store(tmp_path / "index", manifest_for(encoder))
    build_index(store, entries, CountingEmbed(encoder), settings=encoder.settings)
    hit = store.get("long.mp4#t=2.5,5")
    assert (hit.start, hit.end, hit.modality) == (2.5, 5.0, "video")
    # whole-file indexing of the same video replaces the stale clips of that source
    report = build_index(store, scan_folder(corpus), CountingEmbed(encoder))
    assert report.deleted == 3 and set(store.content_hashes()) == {"long.mp4"}
    store.close()


def test_jsonl_source_with_metadata(tmp_path, media_dir, encoder):
    lines = [
        '{"id": "p1", "image": "a.png", "metadata": {"album": "trip"}}',
        '{"id": 7, "text": "What is this place?", "image": "b.jpg"}',
        '{"id": "v", "video": "clip.mp4"}',
    ]
    items = media_dir / "items-test-index.jsonl"
    items.write_text("\n".join(lines) + "\n")
    try:
        entries = scan_jsonl(items)
    finally:
        items.unlink()
    assert [(e.id, e.modality) for e in entries] == [("p1", 2), ("7", 3), ("v", 4)]
    store = create_store(tmp_path / "index", manifest_for(encoder))
    build_index(store, entries, CountingEmbed(encoder))
    assert store.get("p1").metadata == {"album": "trip"} and store.get("7").modality == "text+image"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "ok"}\n{"id": "x", "text": "again"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: id 'x' already used on line 1"):
        scan_source(bad)
    bad.write_text('{"text": "no id"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'id'"):
        scan_source(bad)
    store.close()


def test_reopening_with_other_settings_is_refused(tmp_path, encoder):
    create_store(tmp_path / "index", manifest_for(encoder)).close()
    other = IndexManifest("lancedb", "tiny", encoder.settings.replace(video_frames=8).to_dict(), encoder.embedding_dim)
    with pytest.raises(ConfigError, match="settings"):
        create_store(tmp_path / "index", other)
    with pytest.raises(ConfigError, match="not a unite index"):
        open_store(tmp_path / "nothing")


def test_ann_index_recall_against_exact(tmp_path):
    rng = np.random.default_rng(0)
    dim, rows = 32, 3000
    centres = rng.standard_normal((30, dim))
    vectors = centres[rng.integers(0, 30, rows)] + 0.5 * rng.standard_normal((rows, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    modality = 1 + np.arange(rows) % 3
    from unite.index import Record

    store = create_store(tmp_path / "index", IndexManifest("lancedb", "synthetic", {}, dim, ann_threshold=2000))
    store.upsert([Record(str(i), v, int(modality[i]), str(i), "h") for i, v in enumerate(vectors)])
    assert store.optimize() and store.has_ann_index()
    # queries near table vectors, and fresh samples of the mixture that are not in the table
    near = vectors[:30] + 0.05 * rng.standard_normal((30, dim))
    fresh = centres[rng.integers(0, 30, 30)] + 0.5 * rng.standard_normal((30, dim))
    recalls, filtered = [], []
    for query in np.concatenate([near, fresh]).astype(np.float32):
        exact = {hit.id for hit in store.search(query, k=10, exact=True)}
        scores = vectors @ (query / np.linalg.norm(query))
        expected = set(np.argsort(-scores)[:10].astype(str))
        assert exact == expected  # exact search is brute force: the rule, computed independently
        recalls.append(len({hit.id for hit in store.search(query, k=10)} & exact) / 10)
        images = set(np.argsort(-np.where(modality == 2, scores, -np.inf))[:10].astype(str))
        found = store.search(query, k=10, modality=2)
        assert all(hit.modality == "image" for hit in found)
        filtered.append(len({hit.id for hit in found} & images) / 10)
    assert np.mean(recalls) >= 0.95
    assert np.mean(filtered) >= 0.95
    store.close()


@pytest.mark.slow
def test_build_killed_midway_resumes(tmp_path, legacy_checkpoint):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    total = 240
    for index in range(total):
        (corpus / f"note{index:03d}.txt").write_text(f"note number {index} about topic {index % 7}")
    command = [sys.executable, "-m", "unite.cli.main", "index", "build", str(corpus), "--index", str(tmp_path / "ix")]
    command += ["--model", str(legacy_checkpoint), "--device", "cpu", "--commit-every", "4", "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        committed = 0
        while committed < 8 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            if (tmp_path / "ix" / "unite_index.json").exists():
                try:
                    committed = open_store(tmp_path / "ix").count()
                except Exception:  # the table may not exist yet
                    committed = 0
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    store = open_store(tmp_path / "ix")
    kept = store.count()
    assert 8 <= kept < total, "the build should have been killed midway"
    assert store.search(np.ones(store.manifest.dim, np.float32), k=3)  # still searchable
    store.close()
    from unite.cli.main import main

    assert main(command[3:]) == 0
    store = open_store(tmp_path / "ix")
    assert store.count() == total
    store.close()
