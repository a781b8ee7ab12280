"""GPU check at real scale: a Qwen2-VL-2B-sized checkpoint (random weights) in the released layout.

Writes a 2B checkpoint in the transformers 4.47.1 layout, loads it strictly with ``UniteEncoder`` in bf16 and
float32, and measures on one mixed corpus (texts, images of several sizes, clips, fused items):

- load time of the strict loader;
- items/s of ``encode`` (token-budget batches, background decoding) against one item at a time, per modality;
- peak GPU memory;
- agreement: bf16 vs float32 cosine, batch size 1 vs 16 in bf16, sdpa vs eager, and that mrope runs.

Random weights: right for throughput, memory and numerical agreement, not for retrieval quality.

    python benchmarks/gpu_check.py --output results.json [--size 2b|tiny] [--items 96]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unite import UniteEncoder
from unite.testing import make_image, make_tiny_checkpoint, make_video


def corpus(folder: Path, count: int) -> dict[str, list]:
    rng = np.random.default_rng(0)
    images = []
    for index, (height, width) in enumerate([(480, 640), (1024, 768), (333, 1000), (224, 224), (1080, 1920)]):
        path = folder / f"image{index}.jpg"
        make_image(height, width, seed=index).save(path, quality=90)
        images.append(str(path))
    clips = [
        str(make_video(folder / f"clip{i}.mp4", frames=120, fps=24, height=360, width=480, seed=i, gop=24))
        for i in range(2)
    ]
    words = "a red circle on a white background beside a blue square and a moving green triangle".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(8, 200)))) for _ in range(count)]
    return {
        "text": [{"text": text} for text in texts],
        "image": [{"image": images[i % len(images)]} for i in range(count)],
        "video": [{"video": clips[i % len(clips)]} for i in range(max(8, count // 4))],
        "fused": [{"text": texts[i], "image": images[i % len(images)]} for i in range(count)],
    }


def one_at_a_time(encoder: UniteEncoder, items: list) -> np.ndarray:
    return np.stack([encoder.encode([item], batch_size=1, show_progress_bar=False)[0] for item in items])


def timed(function, *args, **kwargs):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["2b", "tiny"], default="2b")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=8, help="media decoding threads")
    args = parser.parse_args()
    results: dict = {
        "size": args.size,
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name()
    import transformers

    results["transformers"] = transformers.__version__

    def save() -> None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _, seconds = timed(make_tiny_checkpoint, folder / "ckpt", size=args.size, dtype=torch.bfloat16)
        results["write_checkpoint_s"] = seconds
        encoder, seconds = timed(UniteEncoder.from_pretrained, folder / "ckpt", device=args.device, dtype="bfloat16")
        results["strict_load_bf16_s"] = seconds
        data = corpus(folder, args.items)
        encoder.encode(data["text"][:4] + data["image"][:2], show_progress_bar=False)  # warm-up
        save()
        throughput = {}
        for kind, items in data.items():
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            batched, seconds = timed(
                encoder.encode, items, batch_size=32, num_workers=args.workers, show_progress_bar=False
            )
            loop_items = items[: max(8, len(items) // 4)]
            looped, loop_seconds = timed(one_at_a_time, encoder, loop_items)
            throughput[kind] = {
                "items": len(items),
                "batched_items_per_s": len(items) / seconds,
                "one_at_a_time_items_per_s": len(loop_items) / loop_seconds,
                "min_cosine_batched_vs_single": float(np.min(np.sum(batched[: len(loop_items)] * looped, axis=1))),
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            }
            results["throughput"] = throughput
            save()
        sample = data["text"][:4] + data["image"][:4] + data["video"][:2] + data["fused"][:4]
        bf16 = encoder.encode(sample, batch_size=16)
        eager = UniteEncoder.from_pretrained(
            folder / "ckpt", device=args.device, dtype="bfloat16", attn_implementation="eager"
        )
        results["min_cosine_sdpa_vs_eager_bf16"] = float(
            np.min(np.sum(bf16 * eager.encode(sample, batch_size=16), axis=1))
        )
        del eager
        mrope = UniteEncoder(encoder.model, encoder.tokenizer, encoder.settings.replace(position_scheme="mrope"))
        mrope_vectors = mrope.encode(sample, batch_size=16)
        encoder.model.position_scheme = encoder.settings.position_scheme  # the copy shares the model
        results["mrope_vs_sequential_cosine_min_on_media"] = float(np.min(np.sum(bf16[4:] * mrope_vectors[4:], axis=1)))
        del encoder, mrope
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        full = UniteEncoder.from_pretrained(folder / "ckpt", device=args.device, dtype="float32")
        fp32 = full.encode(sample, batch_size=16)
        results["min_cosine_bf16_vs_fp32"] = float(np.min(np.sum(bf16 * fp32, axis=1)))
        results["median_cosine_bf16_vs_fp32"] = float(np.median(np.sum(bf16 * fp32, axis=1)))
        results["min_cosine_fp32_batch16_vs_batch1"] = float(
            np.min(np.sum(fp32 * np.stack([full.encode([i])[0] for i in sample]), axis=1))
        )
    save()
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
