"""Index hardening: confined folder walks, paths relative to the source, versions a reader follows, the weights
fingerprint, clear refusals, stats and remove."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from unite.cli.main import main
from unite.errors import ConfigError
from unite.index import IndexManifest, Record, build_index, create_store, open_store, scan_folder, scan_source
from unite.index.store import MANIFEST_FILE, Hit
from unite.models.loading import FINGERPRINT_BLOCK, FINGERPRINT_FRACTIONS, weights_fingerprint

pytest.importorskip("lancedb")

PUBLIC_FIELDS = {"id", "score", "modality", "path", "start", "end", "text", "metadata"}


def embed_with(encoder):
    return lambda items: encoder.encode_with_errors(items, show_progress_bar=False)


def manifest_for(encoder, backend: str = "lancedb", **extra) -> IndexManifest:
    return IndexManifest(backend, "tiny", encoder.settings.to_dict(), encoder.embedding_dim, **extra)


def note_tree(tmp_path: Path) -> tuple[Path, Path]:
    """``corpus/a/n.txt``, ``corpus/b/m.txt`` and, beside the corpus, ``outside/secret.txt``."""
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    for folder in (corpus / "a", corpus / "b", outside):
        folder.mkdir(parents=True)
    (corpus / "a" / "n.txt").write_text("a note about cats")
    (corpus / "b" / "m.txt").write_text("a note about the sea")
    (outside / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash")
    return corpus, outside


# ------------------------------------------------------------------------------------------------- folder walks


def test_link_to_a_file_outside_is_skipped_and_counted(tmp_path, media_dir):
    corpus, outside = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", outside / "pic.png")
    (corpus / "leak.txt").symlink_to(outside / "secret.txt")
    (corpus / "a" / "pic.png").symlink_to(outside / "pic.png")
    entries = scan_folder(corpus)
    assert sorted(entry.id for entry in entries) == ["a/n.txt", "b/m.txt"]
    assert "root:x" not in json.dumps([entry.item for entry in entries])
    assert sorted(entries.skipped.outside) == ["a/pic.png", "leak.txt"]


def test_link_to_a_folder_outside_is_skipped_and_counted(tmp_path):
    corpus, outside = note_tree(tmp_path)
    (corpus / "etc").symlink_to(outside, target_is_directory=True)
    (corpus / "up").symlink_to(tmp_path, target_is_directory=True)  # the corpus's parent: outside too
    entries = scan_folder(corpus)
    assert sorted(entry.id for entry in entries) == ["a/n.txt", "b/m.txt"]
    assert sorted(entries.skipped.outside) == ["etc", "up"]


def test_link_to_an_ancestor_visits_each_file_once(tmp_path):
    corpus, _ = note_tree(tmp_path)
    (corpus / "a" / "up").symlink_to("..", target_is_directory=True)  # ln -s .. a/up
    (corpus / "b" / "self.txt").symlink_to("self.txt")  # a link to itself: broken, not a crash
    (corpus / "b" / "gone.txt").symlink_to("nothing.txt")
    entries = scan_folder(corpus)
    assert sorted(entry.id for entry in entries) == ["a/n.txt", "b/m.txt"]
    assert entries.skipped.repeated == 1 and entries.skipped.outside == [] and entries.skipped.broken == 2


def test_two_loop_links_terminate(tmp_path):
    corpus, _ = note_tree(tmp_path)
    (corpus / "a" / "up").symlink_to("..", target_is_directory=True)
    (corpus / "b" / "up").symlink_to("..", target_is_directory=True)
    (corpus / "b" / "sibling").symlink_to("../a", target_is_directory=True)  # a/ was walked already
    code = textwrap.dedent(
        f"""
        from unite.index import scan_folder
        print(sorted(entry.id for entry in scan_folder({str(corpus)!r})))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['a/n.txt', 'b/m.txt']"


def test_link_inside_is_indexed_once_under_its_first_path(tmp_path):
    corpus, _ = note_tree(tmp_path)
    (corpus / "0first.txt").symlink_to(corpus / "a" / "n.txt")  # sorts before a/n.txt
    (corpus / "z.txt").symlink_to("a/n.txt")  # sorts after it
    (corpus / "zalias").symlink_to("b", target_is_directory=True)  # b/ sorts first: walked as b/
    (corpus / "a" / "again").symlink_to("../b", target_is_directory=True)  # a/again/ sorts before b/: claims it
    entries = scan_folder(corpus)
    assert sorted(entry.id for entry in entries) == ["0first.txt", "a/again/m.txt"]
    assert entries.skipped.repeated == 4 and entries.skipped.outside == []
    first = next(entry for entry in entries if entry.id == "0first.txt")
    assert first.text == "a note about cats"


def test_unreadable_folder_is_skipped_and_counted(tmp_path, monkeypatch):
    corpus, _ = note_tree(tmp_path)
    locked = os.path.realpath(corpus / "b")
    real_scandir = os.scandir

    def scandir(path):  # what a folder without read permission does (root reads everything, so simulated)
        if os.path.realpath(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = scan_folder(corpus)
    assert [entry.id for entry in entries] == ["a/n.txt"] and entries.skipped.unreadable == ["b"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_and_file_by_permissions(tmp_path, media_dir):
    corpus, _ = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", corpus / "a" / "locked.png")
    (corpus / "b").chmod(0)
    (corpus / "a" / "locked.png").chmod(0)
    try:
        entries = scan_folder(corpus)
    finally:
        (corpus / "b").chmod(0o755)
    assert [entry.id for entry in entries] == ["a/locked.png", "a/n.txt"] and entries.skipped.unreadable == ["b"]
    assert "cannot read" in entries[0].item["error"]


def test_unreadable_file_is_an_entry_error_not_a_crash(tmp_path, media_dir, monkeypatch):
    from unite.index import sources

    corpus, _ = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", corpus / "a" / "locked.png")
    real_hash = sources.file_hash

    def file_hash(path, digest=None):  # what a file without read permission does (root reads everything)
        if path.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash(path, digest)

    monkeypatch.setattr(sources, "file_hash", file_hash)
    entries = scan_folder(corpus)
    assert [entry.id for entry in entries] == ["a/locked.png", "a/n.txt", "b/m.txt"]
    assert entries[0].item == {"error": "a/locked.png: cannot read (Permission denied)"}


def test_build_summary_counts_links_and_sync_keeps_confinement(tmp_path, media_dir, encoder):
    corpus, outside = note_tree(tmp_path)
    (corpus / "leak.txt").symlink_to(outside / "secret.txt")
    (corpus / "ext").symlink_to(outside, target_is_directory=True)
    (corpus / "a" / "up").symlink_to("..", target_is_directory=True)
    store = create_store(tmp_path / "index", manifest_for(encoder))
    # a record of the leaking link as an earlier, unconfined build wrote it
    vector = np.ones(encoder.embedding_dim, np.float32) / np.sqrt(encoder.embedding_dim)
    store.upsert([Record("leak.txt", vector, 1, "leak.txt", "old", path=str(outside / "secret.txt"), text="root:x")])
    report = build_index(store, scan_source(corpus), embed_with(encoder))
    assert (report.added, report.deleted) == (2, 1) and store.get("leak.txt") is None
    assert "2 links pointing outside the folder" in report.summary()
    report = build_index(store, scan_source(corpus), embed_with(encoder), sync=True)
    assert (report.added, report.deleted, report.unchanged) == (0, 0, 2)
    assert sorted(store.content_hashes()) == ["a/n.txt", "b/m.txt"]
    store.close()


def test_sync_keeps_entries_under_an_unreadable_folder(tmp_path, encoder, monkeypatch):
    corpus, _ = note_tree(tmp_path)
    store = create_store(tmp_path / "index", manifest_for(encoder))
    build_index(store, scan_source(corpus), embed_with(encoder))
    locked, real_scandir = os.path.realpath(corpus / "b"), os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: _refuse(p) if os.path.realpath(p) == locked else real_scandir(p))
    report = build_index(store, scan_source(corpus), embed_with(encoder), sync=True)
    assert report.deleted == 0 and store.get("b/m.txt") is not None
    assert "1 unreadable folder" in report.summary()
    store.close()


def _refuse(path):
    raise PermissionError(13, "Permission denied", str(path))


# ------------------------------------------------------------------------------------------ relative paths, Hit


def test_records_keep_paths_relative_to_the_folder(tmp_path, media_dir, encoder):
    corpus, outside = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", corpus / "a" / "pic.png")
    store = create_store(tmp_path / "index", manifest_for(encoder))
    build_index(store, scan_source(corpus), embed_with(encoder))
    hit = store.get("a/pic.png")
    assert (hit.path, hit.root) == ("a/pic.png", os.path.realpath(corpus))
    assert hit.content_hash == _sha256(corpus / "a" / "pic.png")
    public = hit.to_dict()
    assert set(public) == PUBLIC_FIELDS and public["path"] == "a/pic.png"
    query = encoder.encode(["a note"], show_progress_bar=False)[0]
    shown = json.dumps([h.to_dict() for h in store.search(query, k=10)])
    assert str(tmp_path) not in shown and os.path.realpath(tmp_path) not in shown
    assert hit.local_file() == Path(os.path.realpath(corpus / "a" / "pic.png"))

    # a file swapped for a link to the outside after the build is not served; a removed file neither
    (corpus / "a" / "pic.png").unlink()
    (corpus / "a" / "pic.png").symlink_to(outside / "secret.txt")
    assert store.get("a/pic.png").local_file() is None
    (corpus / "a" / "pic.png").unlink()
    assert store.get("a/pic.png").local_file() is None
    store.close()


def test_jsonl_media_paths_never_absolute(tmp_path, media_dir, encoder):
    folder, elsewhere = tmp_path / "items", tmp_path / "elsewhere"
    (folder / "img").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(media_dir / "a.png", folder / "img" / "a.png")
    shutil.copy(media_dir / "b.jpg", elsewhere / "b.jpg")
    lines = [
        {"id": "in", "image": "img/a.png"},
        {"id": "out", "image": "../elsewhere/b.jpg"},
        {"id": "abs", "image": str(elsewhere / "b.jpg"), "text": "absolute"},
        {"id": "t", "text": "only text"},
    ]
    (folder / "items.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    store = create_store(tmp_path / "index", manifest_for(encoder))
    build_index(store, scan_source(folder / "items.jsonl"), embed_with(encoder))
    inside, out, absolute, text = (store.get(name) for name in ("in", "out", "abs", "t"))
    assert (inside.path, inside.root) == ("img/a.png", os.path.realpath(folder))
    assert out.path == absolute.path == "b.jpg" and text.path == ""
    for hit in (inside, out, absolute, text):
        assert str(tmp_path) not in json.dumps(hit.to_dict()) and set(hit.to_dict()) == PUBLIC_FIELDS
    assert out.local_file() == absolute.local_file() == Path(os.path.realpath(elsewhere / "b.jpg"))
    assert inside.local_file() == Path(os.path.realpath(folder / "img" / "a.png")) and text.local_file() is None
    store.close()


def test_legacy_hit_shows_only_the_file_name(tmp_path):
    picture = tmp_path / "photos" / "x.png"
    picture.parent.mkdir()
    picture.write_bytes(b"not really a png")
    hit = Hit("x", 0.5, "image", str(picture), None, None, "", {})
    assert hit.to_dict()["path"] == "x.png" and hit.local_file() == picture
    assert Hit("x", 0.5, "image", str(tmp_path / "gone.png"), None, None, "", {}).local_file() is None


def test_legacy_index_without_root_column_opens_searches_and_builds(tmp_path, media_dir, encoder):
    import lancedb
    import pyarrow as pa

    folder, dim = tmp_path / "old", encoder.embedding_dim
    picture = tmp_path / "photos" / "a.png"
    picture.parent.mkdir()
    shutil.copy(media_dir / "a.png", picture)
    legacy = {"backend": "lancedb", "model": "tiny", "settings": encoder.settings.to_dict(), "dim": dim}
    folder.mkdir()
    (folder / MANIFEST_FILE).write_text(json.dumps(dict(legacy, ann_threshold=50000, url=None, collection="unite")))
    vector = np.ones(dim, np.float32) / np.sqrt(dim)
    row = {"id": "a.png", "vector": vector.tolist(), "modality": 2, "source": "a.png", "content_hash": "h"}
    row.update(path=str(picture), start=None, end=None, text="", metadata="{}")
    schema = pa.schema(
        [("id", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("modality", pa.int8())]
        + [(name, pa.string()) for name in ("source", "content_hash", "path")]
        + [("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()), ("metadata", pa.string())]
    )
    lancedb.connect(str(folder)).create_table("items", pa.Table.from_pylist([row], schema=schema))

    store = open_store(folder)
    hit = store.search(vector, k=1)[0]
    assert (hit.id, hit.root, hit.path) == ("a.png", "", str(picture))
    assert hit.to_dict()["path"] == "a.png" and hit.local_file() == picture
    assert store.stats()["total"] == 1
    store.close()
    # a build over the old index adds the column and writes relative paths
    corpus, _ = note_tree(tmp_path)
    store = create_store(folder, manifest_for(encoder))
    build_index(store, scan_source(corpus), embed_with(encoder))
    assert store.get("a/n.txt").root == os.path.realpath(corpus) and store.get("a.png").root == ""
    store.close()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------ versions


def _records(dim: int, ids: range, tag: str, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Record(str(i), vector, 1, str(i), tag) for i, vector in zip(ids, vectors)]


@pytest.mark.filterwarnings("ignore:optimize\\(cleanup_older_than=0\\)")
def test_reader_follows_a_rebuild_whose_old_versions_were_cleaned_up(tmp_path, monkeypatch):
    from unite.index import lance

    dim = 8
    writer = create_store(tmp_path / "index", IndexManifest("lancedb", "synthetic", {}, dim))
    writer.upsert(_records(dim, range(10), "v1", seed=0))
    reader = open_store(tmp_path / "index")
    before = reader.version()
    assert reader.count() == 10 and reader.refresh() is False and reader.version() == before

    writer.upsert(_records(dim, range(5, 15), "v2", seed=1))  # 5 updated, 5 added
    writer.delete(["0", "1"])
    monkeypatch.setattr(lance, "CLEANUP_OLDER_THAN", timedelta(0))  # the grace period has passed
    writer.optimize()
    # the old reader's files are gone: its next read must still work (it answered 500 here)
    hits = reader.search(np.ones(dim, np.float32), k=20)
    assert len(hits) == 13
    reader.refresh()
    assert reader.version() == writer.version() > before
    assert reader.count() == 13 and reader.get("0") is None and reader.get("14") is not None
    assert reader.get("7").content_hash == "v2" and reader.get("3").content_hash == "v1"
    assert reader.refresh() is False
    reader.close()
    writer.close()


def test_refresh_sees_a_build_without_cleanup_and_grace_keeps_old_versions(tmp_path):
    from unite.index import lance

    assert lance.CLEANUP_OLDER_THAN >= timedelta(minutes=5)
    dim = 8
    writer = create_store(tmp_path / "index", IndexManifest("lancedb", "synthetic", {}, dim))
    writer.upsert(_records(dim, range(4), "v1", seed=0))
    reader = open_store(tmp_path / "index")
    writer.upsert(_records(dim, range(4, 6), "v1", seed=1))
    writer.optimize()  # with the grace period, the reader's version is kept
    assert reader.count() == 4 and len(reader.search(np.ones(dim, np.float32), k=10)) == 4
    assert reader.refresh() is True and reader.count() == 6 and reader.version() == writer.version()
    reader.close()
    writer.close()


@pytest.fixture(params=["lancedb", "qdrant"])
def backend(request):
    if request.param == "qdrant":
        pytest.importorskip("qdrant_client")
    return request.param


def test_stats_per_modality(tmp_path, media_dir, encoder, backend):
    corpus, _ = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", corpus / "a.png")
    shutil.copy(media_dir / "clip.mp4", corpus / "clip.mp4")
    store = create_store(tmp_path / "index", manifest_for(encoder, backend))
    build_index(store, scan_source(corpus), embed_with(encoder))
    stats = store.stats()
    assert stats["items"] == {"text": 2, "image": 1, "video": 1} and stats["total"] == 4
    assert stats["bytes"] > 0
    if backend == "lancedb":
        assert stats["version"] == store.version() and isinstance(stats["version"], int)
    else:
        assert stats["version"] is None and store.version() is None and store.refresh() is False
    store.close()


# -------------------------------------------------------------------------------------------------- fingerprint


def _fake_weights(folder: Path, size: int = 3 << 20) -> Path:
    """A safetensors-shaped file: 8-byte header length, a JSON header, then ``size`` bytes of data."""
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + data)
    (folder / "config.json").write_text("{}")
    return folder / "model.safetensors"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_fingerprint_follows_the_weights_not_the_folder(tmp_path):
    weights = _fake_weights(tmp_path / "m")
    original = weights_fingerprint(tmp_path / "m")
    shutil.copytree(tmp_path / "m", tmp_path / "copy")
    assert weights_fingerprint(tmp_path / "copy") == original

    _flip(tmp_path / "copy" / "model.safetensors", 20)  # inside the JSON header
    assert weights_fingerprint(tmp_path / "copy") != original
    size = weights.stat().st_size
    for fraction in FINGERPRINT_FRACTIONS:  # a byte of each sampled block
        shutil.rmtree(tmp_path / "copy")
        shutil.copytree(tmp_path / "m", tmp_path / "copy")
        start = int(fraction * (size - FINGERPRINT_BLOCK))
        _flip(tmp_path / "copy" / "model.safetensors", start + FINGERPRINT_BLOCK // 2)
        assert weights_fingerprint(tmp_path / "copy") != original, fraction
    with (tmp_path / "copy" / "model.safetensors").open("ab") as stream:
        stream.write(b"\0")
    assert weights_fingerprint(tmp_path / "copy") != original

    # cheap: bytes between the sampled blocks are not read
    shutil.rmtree(tmp_path / "copy")
    shutil.copytree(tmp_path / "m", tmp_path / "copy")
    gap = int(FINGERPRINT_FRACTIONS[1] * (size - FINGERPRINT_BLOCK)) - FINGERPRINT_BLOCK // 2
    _flip(tmp_path / "copy" / "model.safetensors", gap)
    assert weights_fingerprint(tmp_path / "copy") == original


def test_adapter_fingerprint_includes_its_base(tmp_path):
    _fake_weights(tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "base")}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    first = weights_fingerprint(adapter)
    _flip(tmp_path / "base" / "model.safetensors", 20)
    assert weights_fingerprint(adapter) != first
    assert weights_fingerprint(adapter) != weights_fingerprint(tmp_path / "base")


def test_encoder_records_its_fingerprint(encoder, legacy_checkpoint):
    assert encoder.weights_fingerprint == weights_fingerprint(legacy_checkpoint)


# -------------------------------------------------------------------------------------------------- CLI, refusals


def _build(corpus: Path, index: Path, *extra: str) -> int:
    return main(["index", "build", str(corpus), "--index", str(index), "--device", "cpu", "--no-progress", *extra])


def _search(index: Path, *extra: str) -> int:
    return main(["search", "--index", str(index), "a note", "--device", "cpu", "--json", *extra])


def test_search_refuses_changed_weights_and_follows_a_moved_model(tmp_path, legacy_checkpoint, capsys):
    corpus, _ = note_tree(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(legacy_checkpoint, model)
    assert _build(corpus, tmp_path / "ix", "--model", str(model)) == 0
    recorded = json.loads((tmp_path / "ix" / MANIFEST_FILE).read_text())
    assert recorded["model_fingerprint"] == weights_fingerprint(legacy_checkpoint)
    capsys.readouterr()

    model.rename(tmp_path / "moved")
    assert _search(tmp_path / "ix") == 1
    err = capsys.readouterr().err
    assert str(model) in err and "--model" in err and err.count("\n") == 1
    assert _search(tmp_path / "ix", "--model", str(tmp_path / "moved")) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2

    changed = tmp_path / "changed"
    shutil.copytree(tmp_path / "moved", changed)
    size = (changed / "model.safetensors").stat().st_size
    _flip(changed / "model.safetensors", int(FINGERPRINT_FRACTIONS[2] * (size - FINGERPRINT_BLOCK)) + 7)
    assert _search(tmp_path / "ix", "--model", str(changed)) == 1
    err = capsys.readouterr().err
    assert "differ from those the index was built with" in err and str(changed) in err
    assert recorded["model_fingerprint"][:12] in err


def test_build_rerun_reuses_the_recorded_model(tmp_path, legacy_checkpoint, capsys):
    corpus, _ = note_tree(tmp_path)
    assert _build(corpus, tmp_path / "ix") == 1
    assert "--model" in capsys.readouterr().err and not (tmp_path / "ix").exists()
    assert _build(corpus, tmp_path / "ix", "--model", str(legacy_checkpoint), "--video-frames", "8") == 0
    (corpus / "c.txt").write_text("a third note")
    capsys.readouterr()
    assert _build(corpus, tmp_path / "ix") == 0  # model, backend and settings from the manifest
    assert "1 added" in capsys.readouterr().out and open_store(tmp_path / "ix").count() == 3

    changed = tmp_path / "changed"
    shutil.copytree(legacy_checkpoint, changed)
    size = (changed / "model.safetensors").stat().st_size
    _flip(changed / "model.safetensors", int(FINGERPRINT_FRACTIONS[2] * (size - FINGERPRINT_BLOCK)) + 7)
    assert _build(corpus, tmp_path / "ix", "--model", str(changed)) == 1
    err = capsys.readouterr().err
    assert "model_fingerprint" in err and err.count("\n") == 1


def test_moved_model_rerun_and_legacy_manifest(tmp_path, legacy_checkpoint, capsys, caplog):
    from unite.cli.search import encoder_for_index
    from unite.index import read_manifest

    corpus, _ = note_tree(tmp_path)
    shutil.copytree(legacy_checkpoint, tmp_path / "model")
    assert _build(corpus, tmp_path / "ix", "--model", str(tmp_path / "model")) == 0
    (tmp_path / "model").rename(tmp_path / "moved")
    assert _build(corpus, tmp_path / "ix") == 1  # the recorded folder is gone: say how to point at it
    assert "--model NEW_PATH" in capsys.readouterr().err
    assert _build(corpus, tmp_path / "ix", "--model", str(tmp_path / "moved")) == 0  # same weights: accepted
    assert read_manifest(tmp_path / "ix").model == str(tmp_path / "moved")

    # an index written before fingerprints were recorded: searched with a warning
    manifest_file = tmp_path / "ix" / MANIFEST_FILE
    legacy = json.loads(manifest_file.read_text())
    del legacy["model_fingerprint"], legacy["format"]
    manifest_file.write_text(json.dumps(legacy))
    with caplog.at_level("WARNING"):
        encoder = encoder_for_index(read_manifest(tmp_path / "ix"), device="cpu")
    assert encoder.weights_fingerprint == weights_fingerprint(legacy_checkpoint)
    assert "no weights fingerprint" in caplog.text


def test_settings_mismatch_names_exactly_the_fields(tmp_path, encoder):
    create_store(tmp_path / "index", manifest_for(encoder)).close()
    settings = encoder.settings.replace(video_frames=8, image_max_pixels=28 * 28 * 2048).to_dict()
    other = IndexManifest("lancedb", "tiny", settings, encoder.embedding_dim, collection="other")
    with pytest.raises(ConfigError) as caught:
        create_store(tmp_path / "index", other)
    message = str(caught.value)
    old = encoder.settings
    assert f"video_frames={old.video_frames!r}" in message and "8" in message
    assert f"image_max_pixels={old.image_max_pixels!r}" in message and str(28 * 28 * 2048) in message
    assert "collection='unite'" in message and "'other'" in message
    for same in ("video_fps", "image_min_pixels", "backend", "dim", "model="):
        assert same not in message
    assert "\n" not in message


@pytest.mark.parametrize("source", ["missing", "notes.txt"])
def test_build_with_a_bad_source_creates_nothing(tmp_path, legacy_checkpoint, capsys, source):
    (tmp_path / "notes.txt").write_text("a text file is not a source")
    assert _build(tmp_path / source, tmp_path / "ix", "--model", str(legacy_checkpoint)) == 1
    assert source in capsys.readouterr().err and not (tmp_path / "ix").exists()


def test_qdrant_local_lock_is_one_clear_line(tmp_path, encoder):
    pytest.importorskip("qdrant_client")
    first = create_store(tmp_path / "index", manifest_for(encoder, "qdrant"))
    try:
        with pytest.raises(ConfigError) as caught:
            open_store(tmp_path / "index")
    finally:
        first.close()
    message = str(caught.value)
    assert "another process" in message and "--qdrant-url" in message and "\n" not in message


def test_stats_remove_and_relative_paths_through_the_cli(tmp_path, legacy_checkpoint, media_dir, capsys):
    corpus, _ = note_tree(tmp_path)
    shutil.copy(media_dir / "a.png", corpus / "a.png")
    assert _build(corpus, tmp_path / "ix", "--model", str(legacy_checkpoint)) == 0
    capsys.readouterr()
    assert main(["index", "stats", "--index", str(tmp_path / "ix"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == {"text": 2, "image": 1} and stats["total"] == 3 and stats["backend"] == "lancedb"
    assert stats["model_fingerprint"] == weights_fingerprint(legacy_checkpoint) and stats["bytes"] > 0
    assert main(["index", "stats", "--index", str(tmp_path / "ix")]) == 0
    text = capsys.readouterr().out
    assert "image 1" in text and "text 2" in text and stats["model_fingerprint"] in text

    assert _search(tmp_path / "ix") == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert {hit["path"] for hit in results} == {"a.png", "a/n.txt", "b/m.txt"}
    assert _search(tmp_path / "ix", "--absolute-paths") == 0
    paths = {hit["path"] for hit in json.loads(capsys.readouterr().out)["results"]}
    assert paths == {str(Path(os.path.realpath(corpus)) / name) for name in ("a.png", "a/n.txt", "b/m.txt")}

    assert main(["index", "remove", "--index", str(tmp_path / "ix"), "a.png", "nope", "a.png"]) == 0
    out, err = capsys.readouterr()
    assert "removed 1" in out and "nope" in out + err
    assert main(["index", "remove", "--index", str(tmp_path / "ix"), "a.png", "nope"]) == 1
    assert "removed 0 of 2" in capsys.readouterr().out
    assert open_store(tmp_path / "ix").count() == 2
    assert main(["index", "info", "--index", str(tmp_path / "ix")]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 2


def test_a_bad_jsonl_line_never_aborts_a_build(tmp_path, legacy_checkpoint, media_dir, capsys):
    """Bad lines are reported by FILE:LINE and left out; the rest is indexed; a line whose id can still be read
    keeps the record it had (even with --sync); --on-error raise stops with the first bad line."""
    shutil.copy(media_dir / "a.png", tmp_path / "a.png")
    items = tmp_path / "items.jsonl"
    good = [{"id": "n1", "text": "a note"}, {"id": "pic", "image": "a.png"}, {"id": "n2", "text": "another note"}]
    items.write_text("".join(json.dumps(line) + "\n" for line in good))
    index = tmp_path / "ix"
    assert _build(items, index, "--model", str(legacy_checkpoint)) == 0
    (tmp_path / "a.png").unlink()  # the id 'pic' now names a missing file
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), '{"id": "n9", "text": "x \\ud800"}',
             json.dumps(good[0]), json.dumps(good[2])]
    items.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert _build(items, index, "--sync") == 0
    out, err = capsys.readouterr()
    assert "4 failed" in out and "2 unchanged" in out
    for number in (2, 3, 4, 5):
        assert f"items.jsonl:{number}" in err
    ids = set(open_store(index).content_hashes())
    assert ids == {"n1", "pic", "n2"}  # 'pic' kept although its line failed
    assert _build(items, index, "--on-error", "raise") == 1
    assert "items.jsonl:2: invalid JSON" in capsys.readouterr().err
