"""Corpus-scale encoding throughput: ``--engine local`` and ``--engine ray`` against today's single-process
``unite encode`` (one file out), on the same mixed corpus.

Builds the mixed corpus of ``encode_throughput.py`` (about 40% texts of varied length, 35% images of varied
size, 10% short clips, 15% fused text+image items) as one JSON lines file, then runs, as the user would, each
command in a fresh process, in turn, ``--repeats`` times:

- ``single``: ``unite encode items.jsonl --output out.npy`` (one process: media decoded in threads);
- ``local``: ``unite encode items.jsonl --output out/ --engine local`` (worker processes prepare, the model in
  the driver);
- ``ray``: ``unite encode items.jsonl --output out/ --engine ray`` (a local Ray instance, or ``--ray-address``).

It reports the median wall time of each as items/s and as a ratio to ``single`` (start-up, model loading and,
for ray, starting Ray included: what a user waits for), and, for the two engines, the items/s of the encoding
itself as the command reports it (start-up left out). It then measures, in one process on one Ray instance,
how the Ray driver gets the rows of each shard: regrouped as they come (what the engine does) or delivered in
order by Ray Data (``preserve_order``), and how prepared rows travel from the CPU stage to the model stage:
pickled as Python objects (what Ray Data does with a column it cannot turn into Arrow) or as the engine's
columns (pixels in a tensor column). Every run's embeddings are checked against those of the first run.

    python benchmarks/bulk_encode.py [--items 300] [--repeats 3] [--output benchmarks/results/bulk_encode_cpu.json]

On a GPU machine, with a real checkpoint (one model replica per GPU on both engines):

    python benchmarks/bulk_encode.py --model friedrichor/Unite-Base-Qwen2-VL-2B --device cuda \\
        --gpus-per-worker 1 --items 3000 --shard-size 500 --output benchmarks/results/bulk_encode_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_throughput import build_corpus  # noqa: E402

ENGINES = ("single", "local", "ray")
_RATE = re.compile(r"encoded (\d+) items \(\d+ failed\) in ([\d.]+) s")


def command(engine: str, items: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``unite encode`` command line of one engine."""
    argv = [sys.executable, "-m", "unite.cli.main", "encode", str(items), "--model", args.model, "--no-progress"]
    argv += ["--batch-size", str(args.batch_size), "--max-tokens-per-batch", str(args.max_tokens_per_batch)]
    if args.device:
        argv += ["--device", args.device]
    if engine == "single":
        return argv + ["--output", str(out / "single.npy"), "--workers", str(args.threads)]
    argv += ["--output", f"{out / engine}/", "--engine", engine, "--shard-size", str(args.shard_size)]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.gpus_per_worker is not None:
        argv += ["--gpus-per-worker", str(args.gpus_per_worker)]
    if engine == "ray" and args.ray_address:
        argv += ["--ray-address", args.ray_address]
    return argv


def run_once(engine: str, items: Path, scratch: Path, args: argparse.Namespace) -> tuple[float, float | None]:
    """(wall seconds, seconds of the encoding as the command reports it; None for ``single``)."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started = time.perf_counter()
    done = subprocess.run(command(engine, items, out, args), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    reported = _RATE.search(done.stderr)
    return wall, float(reported.group(2)) if reported else None


def embeddings(engine: str, scratch: Path) -> np.ndarray:
    """The rows of the last run of ``engine``, in line order."""
    if engine == "single":
        return np.load(scratch / "out" / "single.npy")
    import pyarrow.parquet as pq

    table = pq.read_table(scratch / "out" / engine).sort_by("line")
    return np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)


def order_comparison(items: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Engine items/s of the Ray driver regrouping rows as they come, and of Ray Data keeping their order
    (alternating, at least 5 times each: the two are close)."""
    import ray

    from unite.bulk.engine import BulkJob
    from unite.bulk.engine_ray import RayEngine
    from unite.bulk.run import run_bulk

    job = BulkJob(
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        engine="ray",
    )
    seconds: dict[str, list[float]] = {"regroup": [], "preserve_order": []}
    ray.init(address=args.ray_address, **({} if args.ray_address else {"include_dashboard": False}))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            run_bulk([str(items)], f"{scratch}/warm/", job, args.shard_size, False)  # workers started once
            for repeat in range(max(args.repeats, 5)):
                for name, keep_order in (("regroup", False), ("preserve_order", True)):
                    summary = run_bulk(
                        [str(items)],
                        f"{scratch}/{name}{repeat}/",
                        job,
                        args.shard_size,
                        False,
                        engine_factory=lambda job, keep=keep_order: RayEngine(job, preserve_order=keep),
                    )
                    seconds[name].append(summary.seconds)
    finally:
        ray.shutdown()
    result: dict[str, Any] = {f"{name}_items_per_s": args.items / statistics.median(v) for name, v in seconds.items()}
    return result | {"seconds": seconds}


#: Synthetic prepared rows for the transport comparison: rows, and patches of each row's image (2048 patches of
#: 1176 floats, 9.6 MB: a 1024x1568 photo at 2B settings).
TRANSPORT_ROWS, TRANSPORT_PATCHES = 96, 2048


def _prepared(batch: dict[str, np.ndarray], as_objects: bool) -> dict[str, np.ndarray]:
    """CPU-stage stand-in: one prepared image row per input row, as PreparedRow objects or as the engine's
    columns."""
    from unite.bulk import engine_ray
    from unite.bulk.stages import PreparedRow
    from unite.data.collator import Features
    from unite.data.media import VisualInput

    rows = [
        PreparedRow(
            "s.jsonl",
            int(i) + 1,
            None,
            Features(
                list(range(600)), [VisualInput(np.full((TRANSPORT_PATCHES, 1176), float(i), np.float32), (1, 32, 64))]
            ),
        )
        for i in batch["id"]
    ]
    if as_objects:  # Ray Data stores a column it cannot convert to Arrow as pickled Python objects
        return {"shard": batch["id"], "row": engine_ray._objects(rows)}
    return {"shard": batch["id"]} | engine_ray._prepared_columns(rows)


class _Consumer:
    """Model-stage stand-in: rebuilds each row's features and reads one pixel of each."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from unite.bulk import engine_ray

        if "row" in batch:
            features = [row.features for row in batch["row"]]
        else:
            features = [engine_ray._prepared_row(batch, i).features for i in range(len(batch["shard"]))]
        return {"shard": batch["shard"], "pixel": np.array([f.images[0].pixel_values[0, 0] for f in features])}


def transport_comparison(repeats: int) -> dict[str, float]:
    """Megabytes of pixels per second moved from CPU tasks to a model actor, as pickled objects and as the
    engine's columns (pixels in a tensor column): rows after the first output block over the time they took
    (the actor's start-up left out), median of ``repeats``."""
    import ray
    import ray.data
    from ray.data import TaskPoolStrategy

    rates: dict[str, list[float]] = {"pickled_objects": [], "tensor_columns": []}
    row_megabytes = TRANSPORT_PATCHES * 1176 * 4 / 1e6
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        for _ in range(repeats):
            for name, as_objects in (("pickled_objects", True), ("tensor_columns", False)):
                dataset = ray.data.range(TRANSPORT_ROWS, override_num_blocks=TRANSPORT_ROWS // 4)
                dataset = dataset.map_batches(  # two tasks at a time: not fused into the one actor below
                    _prepared, batch_size=4, fn_kwargs={"as_objects": as_objects}, compute=TaskPoolStrategy(size=2)
                )
                dataset = dataset.map_batches(_Consumer, batch_size=8, compute=ray.data.ActorPoolStrategy(size=1))
                dataset.context.enable_progress_bars = False
                batches = iter(dataset.iter_batches(batch_size=None))
                first = len(next(batches)["pixel"])
                started = time.perf_counter()
                rest = sum(len(batch["pixel"]) for batch in batches)
                assert first + rest == TRANSPORT_ROWS
                rates[name].append(rest * row_megabytes / (time.perf_counter() - started))
    finally:
        ray.shutdown()
    return {f"{name}_megabytes_per_s": statistics.median(values) for name, values in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: a tiny random checkpoint)")
    parser.add_argument("--device", help="as unite encode --device (default: the best available)")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens-per-batch", type=int, default=16384)
    parser.add_argument("--workers", type=int, help="CPU-stage workers of both engines (default: the cores)")
    parser.add_argument("--threads", type=int, default=2, help="decoding threads of the single process")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per model replica (both engines)")
    parser.add_argument("--ray-address", help="run the ray engine on this cluster")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        if args.model is None:
            from unite.testing import make_tiny_checkpoint

            args.model = str(make_tiny_checkpoint(scratch / "tiny"))
            os.environ["HF_HUB_OFFLINE"] = "1"
        corpus = build_corpus(scratch, args.items)
        items = scratch / "items.jsonl"
        items.write_text("".join(json.dumps(item) + "\n" for item in corpus))
        walls: dict[str, list[float]] = {engine: [] for engine in args.engines}
        reported: dict[str, list[float]] = {engine: [] for engine in args.engines if engine != "single"}
        agreement: dict[str, float] = {}
        reference = None  # the rows of the first run: every run must give the same embeddings
        for _ in range(args.repeats):
            for engine in args.engines:
                wall, seconds = run_once(engine, items, scratch, args)
                walls[engine].append(wall)
                if seconds is not None:
                    reported[engine].append(seconds)
                rows = embeddings(engine, scratch)
                reference = rows if reference is None else reference
                agreement[engine] = min(agreement.get(engine, 1.0), float(np.min(np.sum(rows * reference, axis=1))))
        order = order_comparison(items, args) if "ray" in args.engines else {}
    transport = transport_comparison(args.repeats) if "ray" in args.engines else {}
    result = _result(args, corpus, walls, reported, agreement, order, transport)
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


def _result(args, corpus, walls, reported, agreement, order, transport) -> dict:
    import torch

    kinds = {
        kind: sum(1 for item in corpus if set(item) == keys)
        for kind, keys in (("text", {"text"}), ("image", {"image"}), ("video", {"video"}), ("fused", {"text", "image"}))
    }
    wall = {engine: statistics.median(values) for engine, values in walls.items()}
    base = wall.get("single")
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {
        "items": args.items,
        "corpus": kinds,
        "model": "tiny random checkpoint" if "tiny" in Path(args.model).name else args.model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "repeats": args.repeats,
        "wall_seconds": walls,
        "items_per_s": {engine: args.items / seconds for engine, seconds in wall.items()},
        "ratio_to_single": {engine: base / seconds for engine, seconds in wall.items()} if base else {},
        "encoding_items_per_s": {engine: args.items / statistics.median(v) for engine, v in reported.items() if v},
        "ray_row_order": order,
        "ray_row_transport": transport,
        "min_cosine_to_first_run": agreement,
        "settings": {
            "shard_size": args.shard_size,
            "batch_size": args.batch_size,
            "max_tokens_per_batch": args.max_tokens_per_batch,
            "workers": args.workers,
            "single_threads": args.threads,
            "gpus_per_worker": args.gpus_per_worker,
            "device": args.device,
        },
        "versions": {"torch": torch.__version__, "ray": ray_version},
    }


if __name__ == "__main__":
    sys.exit(main())
