"""Quantised vectors: the definitions (hand-computed, and against sentence-transformers when installed), encode in
every precision with stored and reused ranges, the server's answers, and indexes searched in two stages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unite.cli.main import main
from unite.errors import ConfigError, InputError
from unite.quantization import Calibration, Precision, calibration_path, quantize_embeddings, quantize_rows

# Values whose buckets are exact in binary: dimension 0 spans [0, 255/256] (step 1/256), dimension 1 spans
# [-1, -1 + 255/128] (step 1/128).
SMALL = np.array([[0.0, -1.0], [0.3, 0.0], [255 / 256, -1 + 255 / 128]], dtype=np.float32)
SMALL_UINT8 = [[0, 0], [76, 128], [255, 255]]  # floor(0.3 * 256) = 76, floor((0 + 1) * 128) = 128
SMALL_INT8 = [[-128, -128], [-52, 0], [127, 127]]  # the uint8 buckets minus 128

# Ten dimensions: sign bits 1001 0110 | 10 (padded with zeros to 1000 0000).
SIGNS = np.array([[0.5, -0.1, 0.0, 2.0, -3.0, 0.1, 0.2, -0.2, 1.0, 0.0]], dtype=np.float32)


# --- the definitions ---------------------------------------------------------------------------------------------


def test_int8_and_uint8_buckets_by_hand():
    uint8 = quantize_embeddings(SMALL, "uint8")
    int8 = quantize_embeddings(SMALL, "int8")
    assert uint8.dtype == np.uint8 and uint8.shape == (3, 2) and uint8.tolist() == SMALL_UINT8
    assert int8.dtype == np.int8 and int8.shape == (3, 2) and int8.tolist() == SMALL_INT8


def test_given_ranges_clip_and_a_zero_step_counts_as_one():
    ranges = np.array([[0.0, -1.0], [255 / 256, -1 + 255 / 128]])
    assert quantize_embeddings(np.array([[-5.0, 5.0], [0.5, -0.5]]), "uint8", ranges=ranges).tolist() == [
        [0, 255],
        [128, 64],
    ]
    # min == max: the step is 1, so 3.5 is 2.5 steps above the start -> bucket 2
    assert quantize_embeddings(np.array([[1.0], [3.5]]), "uint8", ranges=np.array([[1.0], [1.0]])).tolist() == [
        [0],
        [2],
    ]


def test_calibration_embeddings_set_the_ranges():
    calibration = np.array([[0.0, -1.0], [255 / 256, -1 + 255 / 128]], dtype=np.float32)
    rows = quantize_embeddings(SMALL[1:2], "uint8", calibration_embeddings=calibration)
    assert rows.tolist() == [[76, 128]]


def test_binary_and_ubinary_pack_the_sign_bits_by_hand():
    ubinary = quantize_embeddings(SIGNS, "ubinary")
    binary = quantize_embeddings(SIGNS, "binary")
    assert ubinary.dtype == np.uint8 and ubinary.tolist() == [[0b10010110, 0b10000000]]
    assert binary.dtype == np.int8 and binary.tolist() == [[0b10010110 - 128, 0]]


def test_asymmetric_score_of_packed_bits_by_hand():
    from unite.index.quantized import asymmetric_scores, byte_columns, sign_tables

    # SIGNS packs to 1001 0110 | 10 (then six padding zeros): signs + - - + - + + - | + -
    query = np.arange(1, 11, dtype=np.float32)
    by_hand = 1 - 2 - 3 + 4 - 5 + 6 + 7 - 8 + 9 - 10  # -1
    rows = np.vstack([SIGNS, np.ones((1, 10)), -np.ones((1, 10))]).astype(np.float32)
    bits = quantize_embeddings(rows, "ubinary")
    assert asymmetric_scores(byte_columns(bits), query).tolist() == [by_hand, 55, -55]  # every bit set / clear
    tables = sign_tables(query, 2)
    assert tables.shape == (2, 256)
    assert tables[0, 0b10000000] == 1 - (2 + 3 + 4 + 5 + 6 + 7 + 8)  # the first dimension is the top bit
    assert tables[0, 0b00000001] == 8 - (1 + 2 + 3 + 4 + 5 + 6 + 7)
    assert tables[1, 0b01000000] == -9 + 10 and tables[1, 0b00111111] == -9 - 10  # padding bits count 0


@pytest.mark.parametrize("dim", [13, 16])
def test_asymmetric_score_is_the_dot_product_with_the_signs(dim):
    from unite.index.quantized import asymmetric_candidates, asymmetric_scores, byte_columns

    rng = np.random.default_rng(dim)
    rows, query = rng.standard_normal((50, dim)), rng.standard_normal(dim)
    bits = np.packbits(rows > 0, axis=1)
    signs = 2.0 * np.unpackbits(bits, axis=1)[:, :dim] - 1  # the definition: +1 per set bit, -1 per clear bit
    expected = signs @ query
    assert np.allclose(asymmetric_scores(byte_columns(bits), query), expected, atol=1e-5)
    assert asymmetric_candidates(byte_columns(bits), query, 5).tolist() == np.argsort(-expected)[:5].tolist()


def test_float_precisions_are_casts():
    assert quantize_embeddings(SMALL, "float16").dtype == np.float16
    assert np.array_equal(quantize_embeddings(SMALL, "float16"), SMALL.astype(np.float16))
    assert np.array_equal(quantize_embeddings(SMALL.astype(np.float64), "float32"), SMALL)
    assert quantize_embeddings(np.zeros((0, 10), np.float32), "binary").shape == (0, 2)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: quantize_embeddings(SMALL, "int4"), ConfigError),
        (lambda: quantize_embeddings(SMALL.astype(np.int8), "int8"), InputError),
        (lambda: quantize_embeddings(SMALL[0], "int8"), InputError),
        (lambda: quantize_embeddings(SMALL[:1], "int8"), InputError),
        (lambda: quantize_embeddings(SMALL, "int8", ranges=np.zeros((2, 3))), InputError),
    ],
)
def test_bad_arguments_raise_typed_errors(call, error):
    with pytest.raises(error):
        call()


def _sentence_transformers_quantize():
    pytest.importorskip("sentence_transformers")
    try:
        from sentence_transformers.util.quantization import quantize_embeddings as reference
    except ImportError:
        from sentence_transformers.quantization import quantize_embeddings as reference
    return reference


def test_matches_sentence_transformers_when_installed():
    reference = _sentence_transformers_quantize()
    # Releases before sentence-transformers PR #3847 truncated after subtracting 128 and did not clip: compare
    # int8 / uint8 only with a release that clips (a value twice the range's maximum lands in bucket 255).
    clips = reference(np.array([[0.0], [1.0]]), "uint8", ranges=np.array([[0.0], [0.5]])).tolist() == [[0], [255]]
    rng = np.random.default_rng(0)
    for dim in (64, 1536, 13):
        embeddings = rng.standard_normal((40, dim)).astype(np.float32)
        calibration = rng.standard_normal((30, dim)).astype(np.float32)
        ranges = np.vstack([calibration.min(0), calibration.max(0)])
        for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
            if precision.endswith("int8") and not clips:
                continue
            variants = [{}]
            if precision.endswith("int8"):
                variants += [{"ranges": ranges}, {"calibration_embeddings": calibration}]
            for extra in variants:
                ours = quantize_embeddings(embeddings, precision, **extra)
                theirs = reference(embeddings, precision, **extra)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (dim, precision, extra.keys())
                assert np.array_equal(ours, theirs), (dim, precision, extra.keys())


# --- calibration files and rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_calibration_round_trips(tmp_path, suffix):
    calibration = Calibration.from_embeddings(SMALL, "int8")
    assert calibration.minimum.tolist() == [0.0, -1.0] and calibration.maximum.tolist() == [255 / 256, -1 + 255 / 128]
    loaded = Calibration.load(calibration.save(tmp_path / f"c{suffix}"))
    assert np.array_equal(loaded.ranges, calibration.ranges) and loaded.precision == "int8"
    np.save(tmp_path / "embeddings.npy", SMALL)
    assert np.array_equal(Calibration.load(tmp_path / "embeddings.npy").ranges, calibration.ranges)


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("missing.npz", None, "not found"),
        ("bad.npz", lambda path: np.savez(path, low=np.zeros(2)), "no array named min or max"),
        ("shape.npz", lambda path: np.savez(path, min=np.zeros((2, 2)), max=np.ones((2, 2))), "1-D float array"),
        ("order.npz", lambda path: np.savez(path, min=np.ones(2), max=np.zeros(2)), "min > max in dimension 0"),
        ("junk.npz", lambda path: path.write_bytes(b"not a zip"), "not a usable calibration file"),
        ("one.npy", lambda path: np.save(path, np.zeros((1, 4), np.float32)), "at least 2 embeddings"),
        ("text.json", lambda path: path.write_text('{"min": [0], "max": "x"}'), "field 'max'"),
        ("c.txt", lambda path: path.write_text(""), "ends with .npz or .json"),
    ],
)
def test_bad_calibration_files_name_the_file(tmp_path, name, write, message):
    path = tmp_path / name
    if write is not None:
        write(path)
    with pytest.raises(ConfigError, match=message) as raised:
        Calibration.load(path)
    assert name in str(raised.value)


def test_failed_rows_stay_zero_and_do_not_set_the_ranges():
    embeddings = np.concatenate([SMALL, np.full((1, 2), 9.0, np.float32)])  # the last row failed: ignored
    ok = np.array([True, True, True, False])
    int8, calibration = quantize_rows(embeddings, ok, "int8")
    assert int8.tolist() == [*SMALL_INT8, [0, 0]] and calibration.maximum.tolist() == [255 / 256, -1 + 255 / 128]
    binary, none = quantize_rows(embeddings, ok, "binary")
    assert none is None and binary[3].tolist() == [-128]  # all bits zero
    assert quantize_rows(embeddings, ok, "ubinary")[0][3].tolist() == [0]


# --- unite encode --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """Four texts and a line that fails (a missing image)."""
    folder = tmp_path_factory.mktemp("quantized-items")
    texts = ["a red circle", "a blue square on grass", "a cat asleep on a sofa", "stormy clouds over the sea"]
    rows = [json.dumps({"text": text}) for text in texts] + [json.dumps({"image": "missing.png"})]
    (folder / "items.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "one.jsonl").write_text(json.dumps({"text": "a green triangle"}) + "\n")
    return folder


def encode(lines, checkpoint, out, *extra, items="items.jsonl"):
    argv = ["encode", str(lines / items), "--model", str(checkpoint), "--output", str(out), "--device", "cpu"]
    return main([*argv, "--no-progress", *extra])


@pytest.fixture(scope="module")
def float_rows(lines, legacy_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "v.npy"
    assert encode(lines, legacy_checkpoint, out, "--on-error", "skip") == 0
    return np.load(out)


@pytest.mark.parametrize(
    ("precision", "dtype", "width"),
    [("float16", "float16", 64), ("int8", "int8", 64), ("uint8", "uint8", 64), ("binary", "int8", 8),
     ("ubinary", "uint8", 8)],
)
def test_encode_writes_each_precision(lines, legacy_checkpoint, tmp_path, float_rows, precision, dtype, width):
    out = tmp_path / "q.npy"
    assert encode(lines, legacy_checkpoint, out, "--precision", precision, "--on-error", "skip") == 0
    rows, mask = np.load(out), np.load(tmp_path / "q.mask.npy")
    assert rows.dtype == np.dtype(dtype) and rows.shape == (5, width)
    assert mask.tolist() == [True, True, True, True, False]
    embedded = float_rows[:4]
    assert np.array_equal(rows[:4], quantize_embeddings(embedded, precision))  # ranges: the embedded rows only
    assert (rows[4] == (-128 if precision == "binary" else 0)).all()  # the failed line: zero (binary: no bit set)
    if Precision(precision).uses_ranges:
        saved = Calibration.load(calibration_path(out))
        assert saved.precision == precision
        assert np.array_equal(saved.minimum, embedded.min(0)) and np.array_equal(saved.maximum, embedded.max(0))
    else:
        assert not calibration_path(out).exists()


def test_stored_ranges_are_reused(lines, legacy_checkpoint, tmp_path, float_rows, capsys):
    first = tmp_path / "corpus.npy"
    assert encode(lines, legacy_checkpoint, first, "--precision", "int8", "--on-error", "skip") == 0
    ranges = np.vstack([float_rows[:4].min(0), float_rows[:4].max(0)])
    one = tmp_path / "one.npy"
    assert encode(lines, legacy_checkpoint, tmp_path / "one_float.npy", items="one.jsonl") == 0
    assert encode(lines, legacy_checkpoint, one, "--precision", "int8", "--calibration",
                  str(calibration_path(first)), items="one.jsonl") == 0
    expected = quantize_embeddings(np.load(tmp_path / "one_float.npy"), "int8", ranges=ranges)
    assert np.array_equal(np.load(one), expected)
    # calibration embeddings (.npy) work too: their own min and max
    assert encode(lines, legacy_checkpoint, tmp_path / "u.npy", "--precision", "uint8", "--calibration",
                  str(tmp_path / "one_float.npy"), items="one.jsonl") == 1
    assert "at least 2 embeddings" in capsys.readouterr().err
    np.save(tmp_path / "cal.npy", float_rows[:4])
    assert encode(lines, legacy_checkpoint, tmp_path / "u.npy", "--precision", "uint8", "--calibration",
                  str(tmp_path / "cal.npy"), items="one.jsonl") == 0
    assert np.array_equal(np.load(tmp_path / "u.npy"), (expected.astype(np.int16) + 128).astype(np.uint8))


def test_encode_refusals_are_one_line(lines, legacy_checkpoint, tmp_path, capsys):
    assert encode(lines, legacy_checkpoint, tmp_path / "a.npy", "--precision", "int8", items="one.jsonl") == 1
    err = capsys.readouterr().err
    assert err.startswith("unite: error: --precision int8: ranges need at least 2") and err.count("\n") == 1
    assert not (tmp_path / "a.npy").exists()
    assert encode(lines, legacy_checkpoint, tmp_path / "b.npy", "--precision", "binary", "--calibration", "x.npz") == 1
    assert "--calibration only applies with --precision int8 or uint8" in capsys.readouterr().err
    wrong = Calibration(np.zeros(3), np.ones(3)).save(tmp_path / "wrong.npz")
    assert encode(lines, legacy_checkpoint, tmp_path / "c.npy", "--precision", "int8", "--calibration", str(wrong),
                  "--on-error", "skip") == 1
    assert "ranges for 3 dimensions, the model gives 64" in capsys.readouterr().err


def test_parquet_stores_the_quantised_rows(lines, legacy_checkpoint, tmp_path, float_rows):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "q.parquet"
    assert encode(lines, legacy_checkpoint, out, "--precision", "binary", "--on-error", "skip") == 0
    table = pq.read_table(out)
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: int8>[8]"
    assert table.schema.metadata[b"unite.precision"] == b"binary"
    column = table.column("embedding").to_pylist()
    assert column[:4] == quantize_embeddings(float_rows[:4], "binary").tolist() and column[4] is None


def test_encode_help_lists_the_precision_options(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    text = capsys.readouterr().out
    assert "--precision {float32,float16,int8,uint8,binary,ubinary}" in text and "--calibration FILE" in text


# --- the server ----------------------------------------------------------------------------------------------------


@pytest.fixture
def client(encoder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unite.server import ServerConfig, create_app

    app = create_app(None, encoder, ServerConfig())
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


TEXTS = ["a red circle", "stormy clouds over the open sea"]


def post(client, **body):
    return client.post("/v1/embeddings", json={"input": TEXTS, **body})


def test_server_answers_a_precision_in_encoding_format(client):
    floats = np.array([row["embedding"] for row in post(client).json()["data"]], dtype=np.float32)
    response = post(client, encoding_format="int8")
    assert response.status_code == 200, response.text
    body = response.json()
    codes = [row["embedding"] for row in body["data"]]
    # no calibration: the range [-1, 1] in every dimension, cut into 255 steps of 2/255 (in float32)
    step = np.float32(2) / np.float32(255)
    assert codes == (np.clip(np.floor((floats + np.float32(1)) / step), 0, 255) - 128).astype(int).tolist()
    assert body["quantization"] == {"ranges": "unit"} and [row["index"] for row in body["data"]] == [0, 1]
    packed = post(client, encoding_format="ubinary").json()
    assert "quantization" not in packed
    assert [row["embedding"] for row in packed["data"]] == np.packbits(floats > 0, axis=1).tolist()


def test_server_answers_every_embedding_type(client):
    floats = np.array([row["embedding"] for row in post(client).json()["data"]], dtype=np.float32)
    response = post(client, embedding_types=["float", "int8", "uint8", "binary", "ubinary"])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert all("embedding" not in row for row in data)
    assert [sorted(row["embeddings"]) for row in data] == [["binary", "float", "int8", "ubinary", "uint8"]] * 2
    first = data[0]["embeddings"]
    assert [len(first[kind]) for kind in ("float", "int8", "uint8", "binary", "ubinary")] == [64, 64, 64, 8, 8]
    assert np.allclose(first["float"], floats[0], atol=1e-6)
    assert [u - 128 for u in first["uint8"]] == first["int8"] and [u - 128 for u in first["ubinary"]] == first["binary"]
    assert first["ubinary"] == np.packbits(floats[0] > 0).tolist()


def test_server_uses_the_calibration_it_is_given(client):
    from unite.server.embeddings import set_calibration

    floats = np.array([row["embedding"] for row in post(client).json()["data"]], dtype=np.float32)
    set_calibration(client.app, Calibration(np.full(64, -0.5), np.full(64, 0.5)))
    body = post(client, encoding_format="uint8").json()
    assert body["quantization"] == {"ranges": "calibration"}
    # [-0.5, 0.5] in 255 steps of 1/255 (in float32), values beyond it in the end buckets
    step = np.float32(1) / np.float32(255)
    by_hand = np.clip(np.floor((floats + np.float32(0.5)) / step), 0, 255).astype(int)
    assert [row["embedding"] for row in body["data"]] == by_hand.tolist()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"embedding_types": ["int4"]}, "embedding_types.0"),
        ({"embedding_types": []}, "embedding_types"),
        ({"embedding_types": ["int8"], "encoding_format": "base64"}, "embedding_types"),
        ({"encoding_format": "int16"}, "encoding_format"),
    ],
)
def test_server_refuses_bad_types(client, body, field):
    response = post(client, **body)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(field)


# --- indexes -----------------------------------------------------------------------------------------------------


def easy_set(dim: int = 64, clusters: int = 12, distractors: int = 280, seed: int = 0):
    """Unit vectors with clear neighbours: per cluster, ten rows at cosine 1/sqrt(1 + (0.1 m)^2) (0.995, 0.981, ...,
    0.707) to its centre, modality text for odd m and image for even m, then random distractors (cosine about 0 to
    every centre); queries are the centres, barely moved."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = []
    for centre in centres:
        for level in range(1, 11):
            away = rng.standard_normal(dim)
            away -= (away @ centre) * centre  # orthogonal to the centre, so the cosine is exactly as planned
            rows.append(centre + 0.1 * level * away / np.linalg.norm(away))
    vectors = np.concatenate([np.array(rows), rng.standard_normal((distractors, dim))]).astype(np.float32)
    queries = centres + 0.001 * rng.standard_normal(centres.shape)
    return unit(vectors), unit(queries)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def store_with(tmp_path, precision: str, vectors: np.ndarray, **extra):
    pytest.importorskip("lancedb")
    from unite.index import IndexManifest, Record, create_store

    manifest = IndexManifest("lancedb", "synthetic", {}, vectors.shape[1], vector_precision=precision, **extra)
    store = create_store(tmp_path / precision, manifest)
    records = [Record(f"r{i}", vector, 1 + i % 2, f"r{i}", "-") for i, vector in enumerate(vectors)]
    for start in range(0, len(records), 150):  # several commits, as a build makes
        store.upsert(records[start : start + 150])
    store.optimize()
    return store


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantised_index_finds_what_float32_finds(tmp_path, precision):
    from unite.index import open_store

    vectors, queries = easy_set()
    store_with(tmp_path, "float32", vectors).close()
    store_with(tmp_path, precision, vectors).close()
    exact, quantised = open_store(tmp_path / "float32"), open_store(tmp_path / precision)
    for query in queries:
        expected = exact.search(query, k=5)
        found = quantised.search(query, k=5)
        assert [hit.id for hit in found] == [hit.id for hit in expected]
        assert [hit.score for hit in found] == pytest.approx([hit.score for hit in expected], abs=1e-5)
        in_modality = quantised.search(query, k=5, modality=2)
        assert [hit.id for hit in in_modality] == [hit.id for hit in exact.search(query, k=5, modality=2)]
    assert [hit.id for hit in quantised.search(queries[0], k=3, exact=True)] == [
        hit.id for hit in exact.search(queries[0], k=3)
    ]


def planted_set(dim: int = 100, size: int = 2000, queries: int = 20, noise: float = 2.0, seed: int = 1):
    """A harder set: per query ten planted rows normalise(c + g_j) around a random centre c among random
    distractors, and the query normalise(c + noise * g) (g, g_j Gaussian); rows 10 i to 10 i + 9 belong to query i."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((queries, dim))
    rows = centres.repeat(10, axis=0) + rng.standard_normal((queries * 10, dim))
    vectors = unit(np.concatenate([rows, rng.standard_normal((size - queries * 10, dim))]))
    return vectors, unit(centres + noise * rng.standard_normal(centres.shape))


def planted_recall(found: list[list[int]]) -> float:
    """Mean over queries of the share of the ten planted rows among the ten found."""
    return float(np.mean([len(set(rows) & set(range(10 * i, 10 * i + 10))) / 10 for i, rows in enumerate(found)]))


def rescored_by_hand(first_stage: np.ndarray, vectors: np.ndarray, query: np.ndarray, count: int) -> list[int]:
    """The ``count`` best rows by the first-stage scores, then the ten of them with the largest float32 cosine."""
    candidates = np.argsort(-first_stage, kind="stable")[:count]
    return candidates[np.argsort(-(vectors[candidates] @ query), kind="stable")[:10]].tolist()


def test_binary_index_scores_the_float_query_not_its_bits(tmp_path):
    vectors, queries = planted_set()
    dim = vectors.shape[1]  # 100: the last packed byte holds 4 dimensions and 4 padding bits
    store = store_with(tmp_path, "binary", vectors, rescore_factor=2)
    found = [[int(hit.id[1:]) for hit in store.search(query, k=10)] for query in queries]
    signs = 2.0 * (vectors > 0) - 1  # each stored bit as +1 / -1
    query_signs = 2.0 * (queries > 0) - 1
    asymmetric = [rescored_by_hand(signs @ q, vectors, q, 20) for q in queries.astype(np.float64)]
    hamming = [rescored_by_hand(signs @ s, vectors, q, 20) for s, q in zip(query_signs, queries)]  # = dim - 2 Hamming
    assert dim % 8 and planted_recall(found) == pytest.approx(planted_recall(asymmetric), abs=0.02)
    assert planted_recall(found) >= planted_recall(hamming) + 0.1  # fails if the first stage goes back to Hamming


def test_binary_index_sees_a_later_commit(tmp_path):
    vectors, queries = easy_set()
    store = store_with(tmp_path, "binary", vectors)
    assert store.search(queries[0], k=1)[0].id == "r0"
    from unite.index import Record

    store.upsert([Record("new", queries[0], 1, "new", "-")])  # a new table version: the codes are read again
    hits = store.search(queries[0], k=2)
    assert [hit.id for hit in hits] == ["new", "r0"] and hits[0].score == pytest.approx(1.0, abs=1e-6)
    store.delete(["new"])
    assert store.search(queries[0], k=1, modality=1)[0].id == "r0"  # r0 is modality 1 (text)


def test_manifest_records_precision_and_int8_ranges(tmp_path):
    from unite.index import IndexManifest, create_store, read_manifest

    vectors, _ = easy_set()
    store_with(tmp_path, "int8", vectors).close()
    manifest = read_manifest(tmp_path / "int8")
    assert manifest.vector_precision == "int8" and manifest.format == 3 and manifest.rescore_factor is None
    recorded = Calibration.from_dict(manifest.calibration)  # the corpus's own min and max, per dimension
    assert np.array_equal(recorded.minimum, vectors.min(0)) and np.array_equal(recorded.maximum, vectors.max(0))
    import lancedb

    table = lancedb.connect(str(tmp_path / "int8")).open_table("items").to_arrow().sort_by("id")
    ids = table["id"].to_pylist()
    codes = np.array(table["vector_q"].to_pylist(), dtype=np.int8)
    rows = np.array([int(i[1:]) for i in ids])
    assert np.array_equal(codes, quantize_embeddings(vectors[rows], "int8", ranges=recorded.ranges))
    store_with(tmp_path, "binary", vectors).close()
    assert read_manifest(tmp_path / "binary").vector_precision == "binary"
    assert read_manifest(tmp_path / "binary").calibration is None
    with pytest.raises(ConfigError, match="vector_precision='int8' vs 'binary'"):
        create_store(tmp_path / "int8", IndexManifest("lancedb", "synthetic", {}, 64, vector_precision="binary"))
    with pytest.raises(ConfigError, match="unknown vector precision 'int4'"):
        IndexManifest("lancedb", "synthetic", {}, 64, vector_precision="int4")


def test_given_ranges_are_kept(tmp_path):
    from unite.index import read_manifest

    vectors, queries = easy_set()
    given = Calibration.unit(64)
    store = store_with(tmp_path, "int8", vectors, calibration=given.to_dict(), rescore_factor=3)
    assert [hit.id for hit in store.search(queries[0], k=1)] == ["r0"]
    manifest = read_manifest(tmp_path / "int8")
    assert manifest.calibration["min"] == [-1.0] * 64 and manifest.rescore_factor == 3


def test_qdrant_is_given_its_own_quantisation(tmp_path, monkeypatch):
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    from unite.index import IndexManifest, Record, create_store

    seen = []
    original = QdrantClient.create_collection

    def record(self, name, **kwargs):
        seen.append(kwargs.get("quantization_config"))
        return original(self, name, **kwargs)

    monkeypatch.setattr(QdrantClient, "create_collection", record)
    vectors, queries = easy_set(clusters=2, distractors=30)
    for precision in ("int8", "binary"):
        store = create_store(tmp_path / precision, IndexManifest("qdrant", "s", {}, 64, vector_precision=precision))
        store.upsert([Record(f"r{i}", vector, 1, f"r{i}", "-") for i, vector in enumerate(vectors)])
        assert store.search(queries[0], k=1)[0].id == "r0"  # embedded mode: exact float32 search
        store.close()
    assert isinstance(seen[0], models.ScalarQuantization) and seen[0].scalar.type == models.ScalarType.INT8
    assert isinstance(seen[1], models.BinaryQuantization)


def test_index_cli_builds_and_searches_int8(tmp_path, legacy_checkpoint, capsys):
    pytest.importorskip("lancedb")
    from unite.index import read_manifest

    corpus = tmp_path / "notes"
    corpus.mkdir()
    for name, text in (("cat.txt", "a cat asleep on a sofa"), ("sea.txt", "stormy clouds over the open sea"),
                       ("red.txt", "a red circle")):
        (corpus / name).write_text(text)
    base = ["index", "build", str(corpus), "--index", str(tmp_path / "ix"), "--no-progress"]
    assert main([*base, "--model", str(legacy_checkpoint), "--vector-precision", "int8", "--rescore-factor", "2"]) == 0
    manifest = read_manifest(tmp_path / "ix")
    assert (manifest.vector_precision, manifest.rescore_factor, manifest.format) == ("int8", 2, 3)
    assert manifest.calibration is not None
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "ix"), "a cat asleep on a sofa", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["id"] == "cat.txt"
    assert main([*base, "--vector-precision", "binary"]) == 1
    assert "vector_precision='int8' vs 'binary'" in capsys.readouterr().err
    assert main([*base, "--rescore-factor", "0"]) == 1
    assert "--rescore-factor must be at least 1" in capsys.readouterr().err
    assert main([*base, "--calibration", str(tmp_path / "c.npz"), "--vector-precision", "binary"]) == 1
    assert "--calibration needs --vector-precision int8" in capsys.readouterr().err
    assert main(["index", "info", "--index", str(tmp_path / "ix")]) == 0
    assert json.loads(capsys.readouterr().out)["vector_precision"] == "int8"


def test_serve_takes_the_ranges_from_the_index_or_the_file(tmp_path):
    from unite.cli.serve import _calibration
    from unite.index import IndexManifest

    recorded = Calibration(np.zeros(4), np.ones(4), "int8")
    manifest = IndexManifest("lancedb", "m", {}, 4, vector_precision="int8", calibration=recorded.to_dict())
    assert np.array_equal(_calibration(None, manifest).ranges, recorded.ranges)
    assert _calibration(None, IndexManifest("lancedb", "m", {}, 4)) is None
    given = Calibration(-np.ones(4), np.ones(4)).save(tmp_path / "c.npz")
    assert np.array_equal(_calibration(given, manifest).minimum, -np.ones(4))
