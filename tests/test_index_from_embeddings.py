"""``unite index build --from-embeddings``: embedding shards indexed without the model, the same as a direct build.

The shards are written here by hand in the format of the issue (``part-NNNNN.parquet`` with the columns source,
line, id, ok, embedding, error, and ``_manifest.json``), their vectors made by the encoder fixture, so these tests
do not depend on ``unite encode``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from unite.cli.main import main
from unite.errors import ConfigError, InputError
from unite.index import open_store, read_manifest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
lancedb = pytest.importorskip("lancedb")

SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("id", pa.string()),
        ("ok", pa.bool_()),
        ("embedding", pa.list_(pa.float32())),
        ("error", pa.string()),
    ]
)
LINES = [
    {"id": "cat", "text": "a cat asleep on a sofa", "metadata": {"tag": "pet", "year": 2024}},
    {"id": "pic", "image": "media/a.png"},
    {"id": 7, "text": "stormy clouds over the open sea"},
    {"id": "clip", "video": "media/clip.mp4"},
    {"id": "both", "text": "<|IMAGE|> a small picture", "image": "media/b.jpg"},
]
#: Modality bits of LINES (text=1, image=2, video=4), by the rule of docs/reference.md.
MODALITIES = {"cat": 1, "pic": 2, "7": 1, "clip": 4, "both": 3}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def make_items(folder: Path, media_dir: Path, lines: list = LINES) -> Path:
    (folder / "media").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.jpg", "clip.mp4"):
        shutil.copy(media_dir / name, folder / "media" / name)
    return write_lines(folder / "items.jsonl", lines)


def item_of(value):
    """The item a line holds (id and metadata set apart), and its id."""
    if isinstance(value, str):
        return value, None
    item = {key: entry for key, entry in value.items() if key not in ("id", "metadata")}
    return item, value.get("id")


def shard_rows(encoder, path: Path, instruction=None, failed=None) -> list[dict]:
    """One row per line of a JSONL source (or row of a Parquet one), embedded by ``encoder``."""
    failed = failed or {}
    if path.suffix == ".parquet":
        values = [{k: v for k, v in row.items() if v is not None} for row in pq.read_table(path).to_pylist()]
    else:
        values = [json.loads(line) for line in path.read_text().splitlines()]
    pairs = [item_of(value) for value in values]
    result = encoder.encode_with_errors(
        [item for item, _ in pairs], base_dir=path.parent, instruction=instruction, show_progress_bar=False
    )
    rows = []
    for number, ((_, record_id), vector, ok) in enumerate(zip(pairs, result.embeddings, result.ok), start=1):
        ok = bool(ok) and number not in failed
        rows.append(
            {
                "line": number,
                "id": None if record_id is None else str(record_id),
                "ok": ok,
                "embedding": [float(x) for x in vector] if ok else [],
                "error": None if ok else failed.get(number, "not embedded"),
            }
        )
    return rows


def write_shards(out: Path, encoder, checkpoint: Path, sources, shard_size=2, instruction=None, failed=None, **extra):
    """``sources``: [(as given, path)]; writes the shards and ``_manifest.json``, returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    shards, listed = [], []
    for given, path in sources:
        rows = shard_rows(encoder, path, instruction, failed)
        for start in range(0, len(rows), shard_size):
            part = rows[start : start + shard_size]
            name = f"part-{len(shards):05d}.parquet"
            columns = {key: [row[key] for row in part] for key in ("line", "id", "ok", "embedding", "error")}
            pq.write_table(pa.table({"source": [given] * len(part), **columns}, schema=SCHEMA), out / name)
            ok = sum(row["ok"] for row in part)
            shards.append(
                {
                    "name": name,
                    "source": given,
                    "first_line": part[0]["line"],
                    "last_line": part[-1]["line"],
                    "rows": len(part),
                    "ok": ok,
                    "failed": len(part) - ok,
                    "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest(),
                    "complete": True,
                }
            )
        stat = path.stat()
        kind = "parquet" if path.suffix == ".parquet" else "jsonl"
        listed.append(
            {
                "source": given,
                "path": str(path.resolve()),
                "kind": kind,
                "rows": len(rows),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        )
    manifest = {
        "format": 1,
        "model": str(checkpoint.resolve()),
        "model_fingerprint": encoder.weights_fingerprint,
        "settings": encoder.settings.to_dict(),
        "instruction": instruction,
        "dim": encoder.embedding_dim,
        "versions": {},
        "shard_size": shard_size,
        "sources": listed,
        "shards": shards,
        "counts": {
            "rows": sum(s["rows"] for s in shards),
            "ok": sum(s["ok"] for s in shards),
            "failed": sum(s["failed"] for s in shards),
            "shards": len(shards),
            "complete_shards": len(shards),
        },
    }
    manifest.update(extra)
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def shard_vectors(out: Path) -> dict[str, np.ndarray]:
    """{id: vector} of the ok rows, read from the shard files."""
    vectors = {}
    for path in sorted(out.glob("part-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["ok"]:
                vectors[row["id"]] = np.asarray(row["embedding"], np.float32)
    return vectors


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def records(index) -> dict[str, dict]:
    """Every record of a LanceDB index, read with LanceDB itself."""
    table = lancedb.connect(str(index)).open_table("items").to_arrow().to_pylist()
    return {row["id"]: row for row in table}


def build(*args, capsys=None) -> tuple[int, str, str]:
    """``unite --debug index build ARGS``: exit status, stdout, stderr; errors raise with their type."""
    code = main(["--debug", "index", "build", *map(str, args), "--no-progress"])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def corpus(tmp_path, media_dir, encoder, legacy_checkpoint):
    items = make_items(tmp_path / "data", media_dir)
    out = tmp_path / "vectors"
    write_shards(out, encoder, legacy_checkpoint, [("data/items.jsonl", items)])
    return items, out


def test_same_index_as_a_direct_build(corpus, tmp_path, encoder, legacy_checkpoint, capsys):
    items, out = corpus
    code, stdout, _ = build("--from-embeddings", out, "--index", tmp_path / "from", capsys=capsys)
    assert code == 0 and "5 scanned: 5 added" in stdout
    model = ["--model", legacy_checkpoint, "--device", "cpu"]
    assert build(items, "--index", tmp_path / "direct", *model)[0] == 0
    ingested, direct = records(tmp_path / "from"), records(tmp_path / "direct")
    assert sorted(ingested) == sorted(direct) == sorted(MODALITIES)
    vectors = shard_vectors(out)
    for record_id, row in ingested.items():
        other = direct[record_id]
        assert row["modality"] == MODALITIES[record_id]
        for name in ("modality", "source", "content_hash", "path", "root", "text", "metadata", "start", "end"):
            assert row[name] == other[name], (record_id, name)
        np.testing.assert_array_equal(np.asarray(row["vector"], np.float32), vectors[record_id])  # exactly the shard's
        assert cosine(row["vector"], other["vector"]) >= 0.99999, record_id
    assert ingested["pic"]["path"] == "media/a.png" and ingested["cat"]["path"] == ""
    assert ingested["pic"]["root"] == os.path.realpath(items.parent)
    assert json.loads(ingested["cat"]["metadata"]) == {"tag": "pet", "year": 2024}
    # the manifest records the shards' model, settings and fingerprint, as a direct build records the encoder's
    from_manifest, direct_manifest = read_manifest(tmp_path / "from"), read_manifest(tmp_path / "direct")
    assert from_manifest.model_fingerprint == encoder.weights_fingerprint == direct_manifest.model_fingerprint
    assert from_manifest.settings == direct_manifest.settings and from_manifest.dim == encoder.embedding_dim
    # searching both gives the same hits
    stores = [open_store(tmp_path / name) for name in ("from", "direct")]
    for query in encoder.encode(["a cat on a sofa", {"image": str(items.parent / "media/a.png")}]):
        hits = [[hit.id for hit in store.search(query, k=5, exact=True)] for store in stores]
        assert hits[0] == hits[1] and len(hits[0]) == 5
    for store in stores:
        store.close()


def test_reruns_are_incremental_both_ways(corpus, tmp_path, encoder, legacy_checkpoint, capsys):
    items, out = corpus
    model = ["--model", legacy_checkpoint, "--device", "cpu"]
    build("--from-embeddings", out, "--index", tmp_path / "a", capsys=capsys)
    assert (
        "0 added, 0 updated, 5 unchanged"
        in build("--from-embeddings", out, "--index", tmp_path / "a", capsys=capsys)[1]
    )
    # a direct build of the same file sees the ingested entries as unchanged, and the other way round
    assert "0 added, 0 updated, 5 unchanged" in build(items, "--index", tmp_path / "a", capsys=capsys)[1]
    build(items, "--index", tmp_path / "b", *model, capsys=capsys)
    assert (
        "0 added, 0 updated, 5 unchanged"
        in build("--from-embeddings", out, "--index", tmp_path / "b", capsys=capsys)[1]
    )
    # an edited line and a new one: one updated, one added; a removed line goes only with --sync
    lines = [dict(LINES[0], text="a dog asleep on a sofa"), *LINES[1:4], {"id": "new", "text": "a new note"}]
    write_lines(items, lines)
    shutil.rmtree(out)
    write_shards(out, encoder, legacy_checkpoint, [("data/items.jsonl", items)])
    code, stdout, _ = build("--from-embeddings", out, "--index", tmp_path / "a", capsys=capsys)
    assert code == 0 and "5 scanned: 1 added, 1 updated, 3 unchanged, 0 deleted" in stdout
    assert "both" in records(tmp_path / "a")
    code, stdout, _ = build("--from-embeddings", out, "--index", tmp_path / "a", "--sync", capsys=capsys)
    assert "0 added, 0 updated, 5 unchanged, 1 deleted" in stdout
    assert "both" not in records(tmp_path / "a")
    np.testing.assert_array_equal(records(tmp_path / "a")["cat"]["vector"], shard_vectors(out)["cat"])


def test_failed_rows_are_reported_and_keep_their_record(corpus, tmp_path, encoder, legacy_checkpoint, capsys):
    items, out = corpus
    build("--from-embeddings", out, "--index", tmp_path / "ix", capsys=capsys)
    before = records(tmp_path / "ix")["pic"]["content_hash"]
    shutil.rmtree(out)
    write_shards(
        out,
        encoder,
        legacy_checkpoint,
        [("data/items.jsonl", items)],
        failed={2: "data/items.jsonl:2: cannot decode a.png"},
    )
    code, stdout, stderr = build("--from-embeddings", out, "--index", tmp_path / "ix", "--sync", capsys=capsys)
    assert code == 0 and "unite: skipped items.jsonl:2: cannot decode a.png" in stderr
    assert "4 scanned: 0 added, 0 updated, 4 unchanged, 0 deleted, 1 failed" in stdout
    assert records(tmp_path / "ix")["pic"]["content_hash"] == before  # kept, also with --sync
    with pytest.raises(InputError, match=r"^items.jsonl:2: cannot decode a.png$"):
        build("--from-embeddings", out, "--index", tmp_path / "ix", "--on-error", "raise")


def test_ok_rows_with_bad_vectors_are_failed(corpus, tmp_path, encoder, capsys):
    _, out = corpus
    table = pq.read_table(out / "part-00000.parquet").to_pylist()
    table[0]["embedding"] = [float("nan")] * encoder.embedding_dim
    table[1]["embedding"] = [0.5, 0.5, 0.5]
    pq.write_table(pa.Table.from_pylist(table, schema=SCHEMA), out / "part-00000.parquet")
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["shards"][0]["sha256"] = hashlib.sha256((out / "part-00000.parquet").read_bytes()).hexdigest()
    (out / "_manifest.json").write_text(json.dumps(manifest))
    code, stdout, stderr = build("--from-embeddings", out, "--index", tmp_path / "ix", capsys=capsys)
    assert code == 0 and "3 scanned: 3 added" in stdout and "2 failed" in stdout
    assert "unite: skipped items.jsonl:1: the shard's embedding holds NaN or infinite values" in stderr
    dim = encoder.embedding_dim
    assert f"unite: skipped items.jsonl:2: the shard's embedding has 3 values, the manifest says dim {dim}" in stderr
    assert sorted(records(tmp_path / "ix")) == ["7", "both", "clip"]


def test_rows_without_ids_a_parquet_source_and_an_instruction(tmp_path, media_dir, encoder, legacy_checkpoint, capsys):
    folder = tmp_path / "data"
    items = make_items(folder, media_dir)
    notes = folder / "notes.jsonl"
    notes.write_text(json.dumps({"text": "a note without an id"}) + "\n" + json.dumps("a plain string line") + "\n")
    table = pa.table({"id": ["cat", "pic"], "text": [LINES[0]["text"], None], "image": [None, "media/a.png"]})
    pq.write_table(table, folder / "items.parquet")
    instruction = "Represent the item for retrieval."
    sources = [("notes.jsonl", notes), ("items.parquet", folder / "items.parquet")]
    write_shards(tmp_path / "vectors", encoder, legacy_checkpoint, sources, instruction=instruction)
    code, stdout, _ = build("--from-embeddings", tmp_path / "vectors", "--index", tmp_path / "ix", capsys=capsys)
    assert code == 0 and "4 scanned: 4 added" in stdout
    rows = records(tmp_path / "ix")
    assert sorted(rows) == ["cat", "notes.jsonl:1", "notes.jsonl:2", "pic"]
    # the hash of what was encoded: the item with the run's instruction, as sorted JSON, then its media bytes
    expected = hashlib.sha256(
        json.dumps({"text": "a plain string line", "instruction": instruction}, sort_keys=True).encode()
    ).hexdigest()
    assert (
        rows["notes.jsonl:2"]["content_hash"] == expected and rows["notes.jsonl:2"]["source"] == "jsonl:notes.jsonl:2"
    )
    digest = hashlib.sha256(json.dumps({"image": "media/a.png", "instruction": instruction}, sort_keys=True).encode())
    digest.update((folder / "media/a.png").read_bytes())
    assert rows["pic"]["content_hash"] == digest.hexdigest() and rows["pic"]["source"] == "parquet:pic"
    assert rows["pic"]["path"] == "media/a.png" and rows["pic"]["modality"] == 3  # an instruction counts as text
    # the same items as JSONL lines carrying that instruction: a direct build sees them as unchanged
    with_instruction = [dict(LINES[0], instruction=instruction), dict(LINES[1], instruction=instruction)]
    write_lines(items, with_instruction)
    code, stdout, _ = build(items, "--index", tmp_path / "ix", capsys=capsys)
    assert "2 scanned: 0 added, 0 updated, 2 unchanged" in stdout


def test_storage_uris(corpus, tmp_path, encoder, capsys):
    from unite.index.storage import location_arg

    assert location_arg("s3://bucket/ix") == "s3://bucket/ix" and location_arg("file:/data/ix") == "file:/data/ix"
    assert location_arg("run:2") == Path("run:2") and location_arg("C:\\data") == Path("C:\\data")  # paths
    _, out = corpus
    index_uri = (tmp_path / "ix").as_uri()
    assert index_uri.startswith("file:///")
    code, stdout, _ = build("--from-embeddings", out.as_uri(), "--index", index_uri, capsys=capsys)
    assert code == 0 and "5 added" in stdout
    assert (tmp_path / "ix" / "unite_index.json").is_file()
    assert read_manifest(index_uri).model_fingerprint == encoder.weights_fingerprint
    assert (
        "0 added, 0 updated, 5 unchanged"
        in build("--from-embeddings", out.as_uri(), "--index", index_uri, capsys=capsys)[1]
    )
    assert main(["index", "stats", "--index", index_uri, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 5 and stats["bytes"] > 0
    store = open_store(index_uri)
    query = shard_vectors(out)["cat"]
    assert store.search(query, k=1, exact=True)[0].id == "cat"
    store.close()


def test_refusals(corpus, tmp_path, encoder, legacy_checkpoint):
    items, out = corpus
    manifest = json.loads((out / "_manifest.json").read_text())

    def rewrite(**changes):
        (out / "_manifest.json").write_text(json.dumps({**manifest, **changes}))

    shards = [dict(shard) for shard in manifest["shards"]]
    shards[1].update(complete=False, ok=None, failed=None, sha256=None)  # planned, not yet written
    rewrite(shards=shards)
    with pytest.raises(ConfigError, match=r"1 incomplete shard\(s\): part-00001.parquet"):
        build("--from-embeddings", out, "--index", tmp_path / "ix")
    assert not (tmp_path / "ix").exists()  # refused before anything is created
    shards[1] = dict(manifest["shards"][1], sha256="0" * 64)
    rewrite(shards=shards)
    with pytest.raises(ConfigError, match=r"part-00001.parquet: sha256 \w+ differs from the manifest's 000000000000"):
        build("--from-embeddings", out, "--index", tmp_path / "ix")
    assert not (tmp_path / "ix").exists()
    rewrite()
    with pytest.raises(ConfigError, match=r"drop --model, --video-frames"):
        build("--from-embeddings", out, "--index", tmp_path / "ix", "--model", legacy_checkpoint, "--video-frames", 8)
    assert build("--from-embeddings", out, "--index", tmp_path / "ix")[0] == 0
    rewrite(model="other", model_fingerprint="f" * 64)
    with pytest.raises(ConfigError, match=r"model_fingerprint=\w{12} \(.*\) vs ffffffffffff \(other\)"):
        build("--from-embeddings", out, "--index", tmp_path / "ix")
    rewrite(settings=encoder.settings.replace(video_frames=8).to_dict())
    with pytest.raises(ConfigError, match=r"settings.video_frames=None vs 8"):
        build("--from-embeddings", out, "--index", tmp_path / "ix")
    rewrite()
    with items.open("a") as handle:
        handle.write(json.dumps({"id": "late", "text": "added after encoding"}) + "\n")
    with pytest.raises(ConfigError, match=r"items.jsonl: the source changed since it was encoded \(size \d+ then"):
        build("--from-embeddings", out, "--index", tmp_path / "ix")
    with pytest.raises(ConfigError, match=r"give either SOURCE .* or --from-embeddings OUT_DIR"):
        build(items, "--from-embeddings", out, "--index", tmp_path / "ix")
    with pytest.raises(ConfigError, match=r"not a folder of embedding shards \(no _manifest.json\)"):
        build("--from-embeddings", tmp_path, "--index", tmp_path / "ix")


def test_shards_of_unite_encode(tmp_path, media_dir, encoder, legacy_checkpoint, capsys):
    """The real ``unite encode SOURCE --output OUT_DIR/``, then --from-embeddings: the same index as a direct build."""
    pytest.importorskip("unite.bulk.run")
    lines = [{key: value for key, value in line.items() if key != "metadata"} for line in LINES if line["id"] != "clip"]
    items = make_items(tmp_path / "data", media_dir, [*lines, {"id": "gone", "image": "media/missing.png"}])
    out = tmp_path / "vectors"
    encode = ["--debug", "encode", str(items), "--model", str(legacy_checkpoint), "--output", f"{out}/"]
    assert main([*encode, "--device", "cpu", "--workers", "1", "--shard-size", "2", "--on-error", "skip"]) == 0
    capsys.readouterr()
    code, stdout, stderr = build("--from-embeddings", out, "--index", tmp_path / "from", capsys=capsys)
    assert code == 0 and "4 scanned: 4 added" in stdout and "1 failed" in stdout
    assert "unite: skipped items.jsonl:5: " in stderr and "missing.png" in stderr
    build(items, "--index", tmp_path / "direct", "--model", legacy_checkpoint, "--device", "cpu", capsys=capsys)
    ingested, direct, vectors = records(tmp_path / "from"), records(tmp_path / "direct"), shard_vectors(out)
    assert sorted(ingested) == sorted(direct) == ["7", "both", "cat", "pic"]
    for record_id, row in ingested.items():
        for name in ("modality", "source", "content_hash", "path", "root", "text"):
            assert row[name] == direct[record_id][name], (record_id, name)
        np.testing.assert_array_equal(np.asarray(row["vector"], np.float32), vectors[record_id])
        assert cosine(row["vector"], direct[record_id]["vector"]) >= 0.99999, record_id
    assert "0 added, 0 updated, 4 unchanged" in build(items, "--index", tmp_path / "from", capsys=capsys)[1]
