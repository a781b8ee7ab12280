"""Quantised vectors: recall@10 of every precision, with and without rescoring, and the index option measured.

    python benchmarks/quantization_report.py [--corpus 20000] [--queries 200] [--noise 5 6 7] [--skip-index]

The retrieval set is synthetic and held out (nothing is tuned on it): random unit vectors of 1536 dimensions (the
UNITE 2B embedding size), isotropic Gaussian directions. Each query has 10 planted neighbours: a random centre c,
documents normalise(c + 1.0 g_j) in the corpus among random distractors, and the query normalise(c + s g) for a
query noise level s (g, g_j independent Gaussians of the centre's scale); recall against the planted truth falls as
s grows. Two references: float32's own top 10 (exact search), and the planted 10.

First stages (as unite.index.quantized scores them): float32 / float16 dot products (float16 values); int8 / uint8
dot products of the codes, query and corpus quantised with the corpus's ranges (unite.quantization, as
sentence-transformers defines them); binary / ubinary the Hamming distance of the packed sign bits (the same bits,
so the same results); for comparison, "binary, float query" scores the same bits against the float32 query (what a
first stage could do instead of the Hamming distance; the index does not). Rescoring x F keeps F * 10 candidates
of the first stage and ranks them by float32 cosine.

The index part builds LanceDB indexes (unite.index, --vector-precision float32 / int8 / binary) over the same
corpus and measures size on disk, query latency (p50 over the queries of the middle noise level) and recall.

Writes benchmarks/results/quantization.json and prints the markdown tables of docs/search.md. About 30 s on 2 CPU
cores (90 s while other work shares them).
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

from unite.index.quantized import hamming_distances, int8_scores
from unite.quantization import Calibration, quantize_embeddings

DIM = 1536
RELEVANT = 10
K = 10
DOC_NOISE = 1.0
RESCORE_FACTORS = (4, 10)
#: The longer curve measured for binary, whose first stage needs many more candidates.
BINARY_CURVE = (4, 10, 20, 50, 100)
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
#: Not a stored precision: binary documents scored against the float32 query (sum of the query's values where a
#: document's bit is set, minus where it is not), for comparison with the Hamming distance.
ASYMMETRIC = "binary, float query"
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
    bits = as_ubinary(quantize_embeddings(corpus, "binary" if precision == ASYMMETRIC else precision))
    query_bits = as_ubinary(quantize_embeddings(queries, "binary" if precision == ASYMMETRIC else precision))
    signs = np.unpackbits(bits, axis=1)[:, :DIM].astype(np.float32) * 2 - 1
    if precision == ASYMMETRIC:
        return queries @ signs.T
    query_signs = np.unpackbits(query_bits, axis=1)[:, :DIM].astype(np.float32) * 2 - 1
    scores = query_signs @ signs.T  # = (bits - 2 * Hamming): the same order as the Hamming distance
    hamming = hamming_distances(bits, query_bits[0])
    assert np.array_equal(np.argsort(-scores[0], kind="stable"), np.argsort(hamming, kind="stable"))
    return scores


def as_ubinary(bits: np.ndarray) -> np.ndarray:
    """Packed bits as uint8 bytes (binary is ubinary - 128)."""
    return bits if bits.dtype == np.uint8 else (bits.astype(np.int16) + 128).astype(np.uint8)


def rescored(candidates: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """The k candidates (per row) with the largest exact (float32) scores."""
    order = np.argsort(-np.take_along_axis(exact, candidates, 1), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, 1)


def precision_rows(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, ranges: np.ndarray) -> list[dict]:
    """Recall@10 of each precision against float32's top 10 and the planted truth, with and without rescoring."""
    exact = queries @ corpus.T
    reference = top(exact, K)
    rows = []
    for precision in (*PRECISIONS, ASYMMETRIC):
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


def binary_curve(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Recall@10 against the planted truth of binary rescored at each factor of :data:`BINARY_CURVE`."""
    exact = queries @ corpus.T
    scores = first_stage("binary", corpus, queries, np.zeros((2, DIM)))
    return {f"x{factor}": recall(rescored(top(scores, K * factor), exact, K), truth) for factor in BINARY_CURVE}


def index_rows(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path) -> list[dict]:
    """LanceDB indexes of each --vector-precision: size on disk, p50 latency, recall@10 (rescore x4 and x10)."""
    from unite.index import IndexManifest, Record, create_store, open_store

    reference = top(queries @ corpus.T, K)
    records = [Record(f"doc{i}", vector, 1, f"doc{i}", "-") for i, vector in enumerate(corpus)]
    rows = []
    for precision in ("float32", "int8", "binary"):
        store = create_store(folder / precision, IndexManifest("lancedb", "synthetic", {}, DIM,
                                                               vector_precision=precision))
        started = time.perf_counter()
        for start in range(0, len(records), 2000):
            store.upsert(records[start : start + 2000])
        store.optimize()  # int8: records the corpus's ranges and rewrites the codes with them
        build_seconds = time.perf_counter() - started
        store.close()
        size = settled_size(folder / precision)
        for factor in (RESCORE_FACTORS[:1] if precision == "float32" else RESCORE_FACTORS):
            reader = open_store(folder / precision)
            reader.manifest = replace(reader.manifest, rescore_factor=factor)  # as --rescore-factor would record
            latencies, found = timed_searches(reader, queries)
            reader.close()
            rows.append({
                "vector_precision": precision,
                "rescore_factor": None if precision == "float32" else factor,
                "bytes_on_disk": size,
                "build_seconds": round(build_seconds, 1),
                "p50_ms": round(1000 * float(np.median(latencies)), 1),
                "vs_float32": recall(found, reference),
                "vs_planted": recall(found, truth),
            })
            print(rows[-1], flush=True)
    return rows


def settled_size(index: Path) -> int:
    """Bytes of the table once versions older than the latest are removed (a build keeps them 10 minutes)."""
    import lancedb

    lancedb.connect(str(index)).open_table("items").optimize(cleanup_older_than=timedelta(0))
    return sum(path.stat().st_size for path in (index / "items.lance").rglob("*") if path.is_file())


def timed_searches(store, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Seconds per search (after one warm-up search) and the (Q, 10) row numbers found."""
    store.search(queries[0], k=K)  # the int8 path reads its codes once per table version
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = store.search(query, k=K)
        latencies.append(time.perf_counter() - started)
        found.append([int(hit.id[3:]) for hit in hits])
    return latencies, np.asarray(found)


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
    lines += ["", "| binary (Hamming), rescored | " + " | ".join(f"x{f}" for f in BINARY_CURVE) + " |",
              "| --- |" + " --- |" * len(BINARY_CURVE)]
    for level in results["precisions"]:
        curve = level["binary_rescore_vs_planted"]
        float32 = level["rows"][0]["vs_planted"]
        lines.append(f"| noise {level['query_noise']:g} (float32 {float32:.3f}) | "
                     + " | ".join(f"{curve[f'x{f}']:.3f}" for f in BINARY_CURVE) + " |")
    if results.get("index"):
        lines += ["", "| --vector-precision | rescore | size on disk | p50 | recall@10 vs float32 / planted |",
                  "| --- | --- | --- | --- | --- |"]
        for row in results["index"]:
            factor = "-" if row["rescore_factor"] is None else f"x{row['rescore_factor']}"
            size = f"{row['bytes_on_disk'] / 2**20:.1f} MiB"
            lines.append(f"| {row['vector_precision']} | {factor} | {size} | {row['p50_ms']:.1f} ms | "
                         f"{row['vs_float32']:.3f} / {row['vs_planted']:.3f} |")
    return "\n".join(lines)


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
    by_noise = {}
    for noise in args.noise:
        queries = unit(centres + noise * rng.standard_normal(centres.shape))
        by_noise[noise] = queries
        rows = precision_rows(corpus, queries, truth, ranges)
        curve = binary_curve(corpus, queries, truth)
        results["precisions"].append({"query_noise": noise, "rows": rows, "binary_rescore_vs_planted": curve})
        print(f"noise {noise:g}: " + ", ".join(f"{r['precision']} {r['vs_planted']:.3f}" for r in rows), flush=True)
    if not args.skip_index:
        middle = args.noise[len(args.noise) // 2]
        folder = Path(tempfile.mkdtemp(prefix="unite-quant-"))
        try:
            queries = by_noise[middle][: args.index_queries]
            results["index"] = index_rows(corpus, queries, truth[: args.index_queries], folder)
            results["setup"]["index_query_noise"] = middle
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    results["setup"]["seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
