"""Quantised vectors: recall@10 of every precision, with and without rescoring, and the index option measured.

    python benchmarks/quantization_report.py [--corpus 20000] [--queries 200] [--noise 5 6 7] [--skip-index]

The retrieval set is synthetic and held out (nothing is tuned on it): random unit vectors of 1536 dimensions (the
UNITE 2B embedding size), isotropic Gaussian directions. Each query has 10 planted neighbours: a random centre c,
documents normalise(c + 1.0 g_j) in the corpus among random distractors, and the query normalise(c + s g) for a
query noise level s (g, g_j independent Gaussians of the centre's scale); recall against the planted truth falls as
s grows. Two references: float32's own top 10 (exact search), and the planted 10.

First stages (as unite.index.quantized scores them): float32 / float16 dot products (float16 values); int8 / uint8
dot products of the codes, query and corpus quantised with the corpus's ranges (unite.quantization, as
sentence-transformers defines them); "binary" the packed sign bits against the float32 query, q . (2 * bits - 1)
(asymmetric: what a binary index does); for comparison "binary, Hamming" the Hamming distance between the query's
sign bits and a document's (symmetric; binary and ubinary are the same bits, so the same scores). Rescoring x F
keeps F * 10 candidates of the first stage and ranks them by float32 cosine.

The index part builds LanceDB indexes (unite.index, --vector-precision float32 / int8 / binary) over the same
corpus and measures size on disk, query latency (p50 over the queries of the middle noise level) and recall; for
comparison, the binary index searched by LanceDB's own Hamming distance (what binary indexes did before). It also
times the two ways of computing the asymmetric score (per-byte lookup tables over the packed bits, and a kept
unpacked int8 +-1 copy).

Writes benchmarks/results/quantization.json and prints the markdown tables of docs/search.md. About 50 s on 2 CPU
cores (longer while other work shares them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np

from unite.index.quantized import asymmetric_scores, byte_columns, hamming_distances, int8_scores
from unite.quantization import Calibration, quantize_embeddings

DIM = 1536
RELEVANT = 10
K = 10
DOC_NOISE = 1.0
RESCORE_FACTORS = (4, 10)
#: The longer curve measured for binary, whose first stage needs many more candidates.
BINARY_CURVE = (4, 10, 20, 50, 100)
#: The binary first stage of the index scores the bits against the float32 query; HAMMING compares the query's own
#: bits with the documents' (the symmetric score, for comparison).
HAMMING = "binary, Hamming"
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", HAMMING)
RESULTS = Path(__file__).parent / "results" / "quantization.json"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_corpus(rng: np.random.Generator, size: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres (Q, D), corpus (N, D) unit rows, planted truth (Q, 10) row indices); the planted rows come first."""
    centres = rng.standard_normal((queries, DIM)).astype(np.float32)
    planted = centres.repeat(RELEVANT, axis=0) + DOC_NOISE * rng.standard_normal((queries * RELEVANT, DIM))
    distractors = rng.standard_normal((size - queries * RELEVANT, DIM))
    corpus = unit(np.concatenate([planted, distractors]).astype(np.float32))
    return centres, corpus, np.arange(queries * RELEVANT).reshape(queries, RELEVANT)


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of the k largest scores per row, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable"), 1)


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    """Mean over queries of |found ∩ expected| / |expected| (10 each)."""
    return round(float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), expected.tolist())])), 4)


def first_stage(precision: str, corpus: np.ndarray, queries: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """(Q, N) first-stage scores, larger is nearer."""
    if precision in ("float32", "float16"):
        return queries.astype(precision).astype(np.float32) @ corpus.astype(precision).astype(np.float32).T
    if precision in ("int8", "uint8"):
        codes = quantize_embeddings(corpus, precision, ranges=ranges)
        query_codes = quantize_embeddings(queries, precision, ranges=ranges)
        scores = query_codes.astype(np.float32) @ codes.astype(np.float32).T
        assert np.allclose(scores[0], int8_scores(codes, query_codes[0]), rtol=1e-6)  # the index's own scoring
        return scores
    bits = quantize_embeddings(corpus, "ubinary")
    signs = np.unpackbits(bits, axis=1)[:, :DIM].astype(np.float32) * 2 - 1
    if precision == "binary":
        scores = queries @ signs.T
        assert np.allclose(scores[0], asymmetric_scores(byte_columns(bits), queries[0]), atol=1e-4)  # the index's
        return scores
    query_bits = quantize_embeddings(queries, "ubinary")
    query_signs = np.unpackbits(query_bits, axis=1)[:, :DIM].astype(np.float32) * 2 - 1
    scores = query_signs @ signs.T  # = (bits - 2 * Hamming): the same order as the Hamming distance
    hamming = hamming_distances(bits, query_bits[0])
    assert np.array_equal(np.argsort(-scores[0], kind="stable"), np.argsort(hamming, kind="stable"))
    return scores


def rescored(candidates: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """The k candidates (per row) with the largest exact (float32) scores."""
    order = np.argsort(-np.take_along_axis(exact, candidates, 1), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, 1)


def precision_rows(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, ranges: np.ndarray) -> list[dict]:
    """Recall@10 of each precision against float32's top 10 and the planted truth, with and without rescoring."""
    exact = queries @ corpus.T
    reference = top(exact, K)
    rows = []
    for precision in PRECISIONS:
        scores = first_stage(precision, corpus, queries, ranges)
        row = {"precision": precision}
        found = top(scores, K)
        row["vs_float32"], row["vs_planted"] = recall(found, reference), recall(found, truth)
        for factor in RESCORE_FACTORS:
            best = rescored(top(scores, K * factor), exact, K)
            row[f"rescore_x{factor}_vs_float32"] = recall(best, reference)
            row[f"rescore_x{factor}_vs_planted"] = recall(best, truth)
        rows.append(row)
    return rows


def binary_curve(precision: str, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Recall@10 against the planted truth of ``precision`` (binary or its Hamming comparison) rescored at each
    factor of :data:`BINARY_CURVE`."""
    exact = queries @ corpus.T
    scores = first_stage(precision, corpus, queries, np.zeros((2, DIM)))
    return {f"x{factor}": recall(rescored(top(scores, K * factor), exact, K), truth) for factor in BINARY_CURVE}


#: The rescore factors the binary index is timed at (the others: RESCORE_FACTORS).
BINARY_INDEX_FACTORS = (4, 10, 20, 50)


def index_rows(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path) -> list[dict]:
    """LanceDB indexes of each --vector-precision: size on disk, p50 latency, recall@10 at each rescore factor; the
    binary index also searched by LanceDB's Hamming distance, for comparison."""
    from unite.index import open_store

    reference = top(queries @ corpus.T, K)
    factors = {"float32": (None,), "int8": RESCORE_FACTORS, "binary": BINARY_INDEX_FACTORS}
    rows = []
    for precision in ("float32", "int8", "binary"):
        build_seconds = build_index(folder / precision, precision, corpus)
        common = {"vector_precision": precision, "bytes_on_disk": settled_size(folder / precision),
                  "first_stage_bytes_in_memory": first_stage_bytes(precision, len(corpus)),
                  "build_seconds": round(build_seconds, 1)}
        for factor in factors[precision]:
            reader = open_store(folder / precision)
            reader.manifest = replace(reader.manifest, rescore_factor=factor)  # as --rescore-factor would record
            latencies, found = timed_searches(reader.search, queries)
            reader.close()
            rows.append(index_row(common, factor, latencies, found, reference, truth))
    for factor in RESCORE_FACTORS:
        latencies, found = timed_searches(lancedb_hamming_search(folder / "binary", factor), queries)
        common = {**common, "vector_precision": "binary, Hamming (LanceDB)", "first_stage_bytes_in_memory": 0}
        rows.append(index_row(common, factor, latencies, found, reference, truth))
    return rows


def build_index(index: Path, precision: str, corpus: np.ndarray) -> float:
    """Build an index of ``corpus`` (ids doc0, doc1, ...) in commits of 2000 rows; the seconds it took."""
    from unite.index import IndexManifest, Record, create_store

    records = [Record(f"doc{i}", vector, 1, f"doc{i}", "-") for i, vector in enumerate(corpus)]
    store = create_store(index, IndexManifest("lancedb", "synthetic", {}, DIM, vector_precision=precision))
    started = time.perf_counter()
    for start in range(0, len(records), 2000):
        store.upsert(records[start : start + 2000])
    store.optimize()  # int8: records the corpus's ranges and rewrites the codes with them
    seconds = time.perf_counter() - started
    store.close()
    return seconds


def first_stage_bytes(precision: str, rows: int) -> int:
    """Bytes of the per-version copy of the first-stage codes a reader keeps: int8 N x D, binary N x D / 8."""
    return {"float32": 0, "int8": rows * DIM, "binary": rows * ((DIM + 7) // 8)}[precision]


def index_row(common: dict, factor: int | None, latencies: list[float], found: np.ndarray, reference: np.ndarray,
              truth: np.ndarray) -> dict:
    """One row of the index table (printed as it is measured)."""
    row = {**common, "rescore_factor": factor, "p50_ms": round(1000 * float(np.median(latencies)), 1),
           "vs_float32": recall(found, reference), "vs_planted": recall(found, truth)}
    print(row, flush=True)
    return row


def lancedb_hamming_search(index: Path, factor: int):
    """A search over a binary index as binary indexes searched before the asymmetric first stage: LanceDB's Hamming
    distance between the query's packed bits and the stored ones, ``factor * k`` candidates rescored by cosine."""
    import lancedb

    from unite.index.lance import _COLUMNS  # the columns the index's own search reads
    from unite.index.quantized import cosine_rescore
    from unite.index.store import Hit

    table = lancedb.connect(str(index)).open_table("items")

    def search(query: np.ndarray, k: int) -> list:
        bits = quantize_embeddings(query[None], "ubinary")[0]
        rows = table.search(bits, vector_column_name="vector_q").metric("hamming").limit(factor * k)
        rows = rows.select([*_COLUMNS, "vector", "_distance"]).to_list()
        order, scores = cosine_rescore(np.stack([row["vector"] for row in rows]), query, k)
        return [Hit(rows[i]["id"], float(score), "text", "", None, None, "", {}) for i, score in zip(order, scores)]

    return search


def settled_size(index: Path) -> int:
    """Bytes of the table once versions older than the latest are removed (a build keeps them 10 minutes)."""
    import lancedb

    lancedb.connect(str(index)).open_table("items").optimize(cleanup_older_than=timedelta(0))
    return sum(path.stat().st_size for path in (index / "items.lance").rglob("*") if path.is_file())


def timed_searches(search, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Seconds per ``search(query, k=10)`` (after one warm-up search) and the (Q, 10) row numbers found."""
    search(queries[0], k=K)  # the quantised paths read their codes once per table version
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = search(query, k=K)
        latencies.append(time.perf_counter() - started)
        found.append([int(hit.id[3:]) for hit in hits])
    return latencies, np.asarray(found)


def scoring_strategies(corpus: np.ndarray, queries: np.ndarray, copies: tuple[int, ...] = (1, 5)) -> list[dict]:
    """The asymmetric first stage computed two ways, timed (median ms per query over ``queries``) on the corpus
    repeated ``copies`` times: per-byte lookup tables over the packed bits (what the index does; keeps N x D / 8
    bytes) and an unpacked int8 +-1 copy scored like int8 codes (keeps N x D bytes)."""
    rows = []
    for copy in copies:
        bits = np.tile(quantize_embeddings(corpus, "ubinary"), (copy, 1))
        columns = byte_columns(bits)
        signs = (np.unpackbits(bits, axis=1)[:, :DIM].astype(np.int8) * 2 - 1).astype(np.int8)
        for name, kept, score in (("lookup tables over packed bits", columns, asymmetric_scores),
                                  ("unpacked int8 +-1 copy", signs, int8_scores)):
            score(kept, queries[0])
            seconds = []
            for query in queries:
                started = time.perf_counter()
                score(kept, query)
                seconds.append(time.perf_counter() - started)
            rows.append({"strategy": name, "rows": len(bits), "bytes_in_memory": kept.nbytes,
                         "median_ms": round(1000 * float(np.median(seconds)), 1)})
            print(rows[-1], flush=True)
    return rows


def markdown(results: dict) -> str:
    """The tables of docs/search.md ("Quantised vectors")."""
    lines = ["| precision | noise | first stage vs float32 / planted | rescore x4 | rescore x10 |",
             "| --- | --- | --- | --- | --- |"]
    for level in results["precisions"]:
        for row in level["rows"]:
            cells = [f"{row['vs_float32']:.3f} / {row['vs_planted']:.3f}"]
            cells += [f"{row[f'rescore_x{f}_vs_float32']:.3f} / {row[f'rescore_x{f}_vs_planted']:.3f}"
                      for f in RESCORE_FACTORS]
            lines.append(f"| {row['precision']} | {level['query_noise']:g} | " + " | ".join(cells) + " |")
    lines += ["", "| binary rescored, vs planted | float32 | " + " | ".join(f"x{f}" for f in BINARY_CURVE) + " |",
              "| --- | --- |" + " --- |" * len(BINARY_CURVE)]
    for level in results["precisions"]:
        for name, key in (("binary", "binary_rescore_vs_planted"), (HAMMING, "hamming_rescore_vs_planted")):
            curve = level[key]
            lines.append(f"| {name}, noise {level['query_noise']:g} | {level['rows'][0]['vs_planted']:.3f} | "
                         + " | ".join(f"{curve[f'x{f}']:.3f}" for f in BINARY_CURVE) + " |")
    if results.get("index"):
        lines += ["", *index_markdown(results["index"])]
    if results.get("binary_scoring"):
        lines += ["", "| asymmetric score computed by | rows | kept in memory | per query |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {row['strategy']} | {row['rows']} | {row['bytes_in_memory'] / 2**20:.1f} MiB | "
                  f"{row['median_ms']:.1f} ms |" for row in results["binary_scoring"]]
    return "\n".join(lines)


def index_markdown(rows: list[dict]) -> list[str]:
    """The index table: one line per precision and rescore factor."""
    lines = ["| --vector-precision | rescore | size on disk | first stage in memory | p50 | recall@10 vs float32 / "
             "planted |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        factor = "-" if row["rescore_factor"] is None else f"x{row['rescore_factor']}"
        size, kept = (f"{row[key] / 2**20:.1f} MiB" for key in ("bytes_on_disk", "first_stage_bytes_in_memory"))
        lines.append(f"| {row['vector_precision']} | {factor} | {size} | {kept} | {row['p50_ms']:.1f} ms | "
                     f"{row['vs_float32']:.3f} / {row['vs_planted']:.3f} |")
    return lines


def noise_level(noise: float, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, ranges: np.ndarray) -> dict:
    """The precision rows and the binary curves (asymmetric and Hamming) of one query noise level."""
    rows = precision_rows(corpus, queries, truth, ranges)
    print(f"noise {noise:g}: " + ", ".join(f"{r['precision']} {r['vs_planted']:.3f}" for r in rows), flush=True)
    return {
        "query_noise": noise, "rows": rows,
        "binary_rescore_vs_planted": binary_curve("binary", corpus, queries, truth),
        "hamming_rescore_vs_planted": binary_curve(HAMMING, corpus, queries, truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=20_000, help="corpus rows (default %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="queries per noise level (default %(default)s)")
    parser.add_argument("--noise", type=float, nargs="+", default=[5.0, 6.0, 7.0], help="query noise levels")
    parser.add_argument("--index-queries", type=int, default=100, help="queries timed per index (default 100)")
    parser.add_argument("--skip-index", action="store_true", help="only the precision table")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    centres, corpus, truth = make_corpus(rng, args.corpus, args.queries)
    ranges = Calibration.from_embeddings(corpus).ranges  # queries are quantised with the corpus's ranges
    results: dict = {
        "setup": {"dim": DIM, "corpus": args.corpus, "queries": args.queries, "relevant_per_query": RELEVANT,
                  "doc_noise": DOC_NOISE, "k": K, "int8_ranges": "min/max of the corpus per dimension"},
        "precisions": [],
    }
    by_noise = {noise: unit(centres + noise * rng.standard_normal(centres.shape)) for noise in args.noise}
    for noise, queries in by_noise.items():
        results["precisions"].append(noise_level(noise, corpus, queries, truth, ranges))
    if not args.skip_index:
        middle = args.noise[len(args.noise) // 2]
        folder = Path(tempfile.mkdtemp(prefix="unite-quant-"))
        try:
            queries = by_noise[middle][: args.index_queries]
            results["index"] = index_rows(corpus, queries, truth[: args.index_queries], folder)
            results["setup"]["index_query_noise"] = middle
            results["binary_scoring"] = scoring_strategies(corpus, queries)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    results["setup"]["seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
