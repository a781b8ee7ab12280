"""Search benchmarks: build throughput, query latency, ANN recall against exact search, server throughput.

    python benchmarks/search_bench.py [--rows 100000] [--dim 1536] [--skip-ann] [--skip-server]

Build throughput and server throughput use the tiny random checkpoint (CPU); the ANN part uses synthetic
clustered unit vectors in LanceDB with the index settings of unite.index.lance (at 100k x 1536 on 2 CPU cores
it takes about two minutes, most of it writing the table and building the index).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def build_throughput(folder: Path, items: int = 120) -> float:
    from unite import UniteEncoder
    from unite.index import IndexManifest, build_index, create_store, scan_folder
    from unite.testing import make_image, make_tiny_checkpoint

    encoder = UniteEncoder.from_pretrained(make_tiny_checkpoint(folder / "tiny"), device="cpu")
    corpus = folder / "corpus"
    corpus.mkdir()
    for index in range(items):
        if index % 2:
            make_image(224, 224, seed=index).save(corpus / f"{index}.png")
        else:
            (corpus / f"{index}.txt").write_text(f"note {index} about a topic of its own, number {index % 13}")
    store = create_store(
        folder / "index", IndexManifest("lancedb", "tiny", encoder.settings.to_dict(), encoder.embedding_dim)
    )
    started = time.perf_counter()
    report = build_index(
        store, scan_folder(corpus), lambda batch: encoder.encode_with_errors(batch, show_progress_bar=False)
    )
    seconds = time.perf_counter() - started
    print(f"build: {report.added} items in {seconds:.1f} s = {report.added / seconds:.1f} items/s")
    return report.added / seconds


def ann(folder: Path, rows: int, dim: int, queries: int = 100, repeats: int = 3) -> None:
    """Exact vs approximate search over ``rows`` synthetic clustered unit vectors (200 clusters).

    Queries are fresh samples of the same mixture (not in the table; about 0.73 cosine to their cluster), and the
    ground truth is an independent NumPy brute force. For contrast, "noise" queries are table vectors plus
    per-dimension noise of 0.3 (about 0.09 cosine to their seed, i.e. nearly random directions with no real
    neighbours), the setting of the first version of this benchmark.
    """
    from unite.index import IndexManifest, Record, create_store
    from unite.index.lance import ANN_NPROBES, ANN_REFINE_FACTOR, ann_partitions

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    modality = 1 + np.arange(rows) % 3
    store = create_store(folder / "ann", IndexManifest("lancedb", "synthetic", {}, dim, ann_threshold=rows))
    started = time.perf_counter()
    for start in range(0, rows, 10_000):
        store.upsert(
            [Record(str(i), vectors[i], int(modality[i]), str(i), "h") for i in range(start, min(rows, start + 10_000))]
        )
    print(f"ann: wrote {rows} x {dim} vectors in {time.perf_counter() - started:.1f} s")
    probes = centres[rng.integers(0, 200, queries)] + 0.6 * rng.standard_normal((queries, dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    noise = vectors[rng.integers(0, rows, 20)] + 0.3 * rng.standard_normal((20, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)

    def brute(query: np.ndarray, only: int | None = None) -> set[str]:
        scores = vectors @ query
        if only is not None:
            scores = np.where(modality == only, scores, -np.inf)
        return set(np.argsort(-scores)[:10].astype(str))

    truth = [brute(q) for q in probes]
    truth_filtered = [brute(q, 2) for q in probes]
    truth_noise = [brute(q) for q in noise]
    exact_latency = []
    for query, expected in zip(probes[:20], truth):
        started = time.perf_counter()
        found = {hit.id for hit in store.search(query, k=10, exact=True)}
        exact_latency.append(time.perf_counter() - started)
        assert found == expected, "exact search disagrees with the NumPy brute force"
    started = time.perf_counter()
    store.optimize()
    print(
        f"ann: IVF_SQ ({ann_partitions(rows)} partitions) over {rows} x {dim} built in "
        f"{time.perf_counter() - started:.0f} s (optimize: compaction + vector index + modality bitmap)"
    )

    def run(batch: np.ndarray, expected: list[set[str]], only: int | None = None) -> tuple[list[float], float]:
        latency, recall = [], []
        for repeat in range(repeats):
            for query, exact in zip(batch, expected):
                started = time.perf_counter()
                found = {hit.id for hit in store.search(query, k=10, modality=only)}
                latency.append(time.perf_counter() - started)
                if repeat == 0:
                    recall.append(len(found & exact) / 10)
        return latency, float(np.mean(recall))

    p = lambda values, q: 1000 * np.percentile(values, q)  # noqa: E731
    print(
        f"exact search ({len(exact_latency)} queries): p50 {p(exact_latency, 50):.1f} ms, "
        f"p95 {p(exact_latency, 95):.1f} ms"
    )
    settings = f"nprobes {ANN_NPROBES}, refine x{ANN_REFINE_FACTOR}"
    for label, batch, expected, only in (
        ("ann search", probes, truth, None),
        ("ann search, modality=image", probes, truth_filtered, 2),
        ("ann search, noise queries", noise, truth_noise, None),
    ):
        latency, recall = run(batch, expected, only)
        print(
            f"{label} ({settings}; {len(batch)} queries x {repeats}): p50 {p(latency, 50):.1f} ms, "
            f"p95 {p(latency, 95):.1f} ms, recall@10 vs brute force {recall:.3f}"
        )


def server_throughput(folder: Path, requests: int = 64, concurrency: int = 16) -> None:
    import httpx

    from unite import UniteEncoder
    from unite.server import ServerConfig, create_app

    encoder = UniteEncoder.from_pretrained(folder / "tiny", device="cpu")
    for label, config in (("batched", ServerConfig()), ("unbatched", ServerConfig(max_batch=1, batch_wait_ms=0))):
        app = create_app(None, encoder, config)
        import uvicorn

        port = 8765
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

        async def run(server=server, port=port) -> float:
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            limit = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:

                async def one(i: int) -> None:
                    async with limit:
                        response = await client.post("/v1/embeddings", json={"input": f"query number {i} about things"})
                        response.raise_for_status()

                started = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(requests)))
                seconds = time.perf_counter() - started
            server.should_exit = True
            await task
            return seconds

        seconds = asyncio.run(run())
        print(f"server ({label}): {requests} requests, {concurrency} concurrent: {requests / seconds:.1f} req/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="unite-search-bench-"))
    try:
        build_throughput(folder)
        if not args.skip_server:
            server_throughput(folder)
        if not args.skip_ann:
            ann(folder, args.rows, args.dim)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
