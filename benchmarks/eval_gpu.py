"""End-to-end evaluation of a registered benchmark on a GPU: load data, encode (cached), search, report.

With real data (``--data-root`` or ``UNITE_EVAL_DATA`` holding the benchmark's public files) and a released
checkpoint this reproduces a paper number, e.g.:

    python benchmarks/eval_gpu.py --model friedrichor/Unite-Base-Qwen2-VL-2B --task MSRVTT-1K-A-T2V \
        --data-root /data --output-dir runs/2b

Without data, ``--synthetic N`` writes a synthetic stand-in of the task's layout with N items and
``--model tiny|2b`` builds a random checkpoint (the real 2B architecture for ``2b``): the numbers then mean
nothing, but the whole path (loader, two-stage pixels, encoding on the GPU, chunked search on the GPU, cache,
reports) runs and is timed. A second pass checks that the cache answers everything.

Writes OUTPUT/<task>.json, OUTPUT/summary.md and OUTPUT/timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from unite import UniteEncoder
from unite.evaluation import EvalConfig, evaluate, resolve_tasks
from unite.evaluation.harness import DATA_ROOT_ENV, load_tasks
from unite.testing import make_tiny_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id; 'tiny' or '2b' for random weights")
    parser.add_argument("--task", action="append", required=True, help="registered task or group (repeatable)")
    parser.add_argument("--data-root", type=Path, default=os.environ.get(DATA_ROOT_ENV))
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--synthetic", type=int, default=0, help="write a synthetic stand-in with this many items")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--video-frames", type=int, help="override the protocol's frame count (recorded)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="unite-eval-"))
    if args.synthetic:
        from unite.evaluation.synthetic import build_stand_in

        args.data_root = scratch / "data"
        for spec, _ in resolve_tasks(args.task, args.data_root):
            build_stand_in(spec, args.data_root, count=args.synthetic)
    if args.data_root is None:
        sys.stderr.write(f"no data: pass --data-root, set {DATA_ROOT_ENV}, or use --synthetic N\n")
        return 2
    model = args.model
    if model in ("tiny", "2b"):
        model = str(make_tiny_checkpoint(scratch / "checkpoint", size=model, dtype=torch.bfloat16))

    timing: dict[str, float] = {}
    start = time.perf_counter()
    tasks = load_tasks(args.task, args.data_root)
    timing["load_data_s"] = time.perf_counter() - start
    start = time.perf_counter()
    overrides = {"video_frames": args.video_frames} if args.video_frames else {}
    encoder = UniteEncoder.from_pretrained(model, device=args.device, **overrides)
    timing["load_model_s"] = time.perf_counter() - start
    config = EvalConfig(
        batch_size=args.batch_size, limit=args.limit, cache_dir=args.output_dir / "cache", setting_overrides=overrides
    )
    for run in ("first_pass_s", "cached_pass_s"):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        results = evaluate(encoder, tasks, output_dir=args.output_dir, config=config)
        timing[run] = time.perf_counter() - start
    timing["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    report = {
        "timing": timing,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "tasks": {
            r["task"]: {"metrics": r["metrics"], "counts": r["counts"], "cache": r["cache"], "paper": r["paper"]}
            for r in results
        },
        "synthetic": bool(args.synthetic),
        "model": args.model,
    }
    (args.output_dir / "timing.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print((args.output_dir / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
