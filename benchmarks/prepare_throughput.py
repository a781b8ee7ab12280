"""Preparation throughput (no model): worker processes vs threads, 1 vs N workers, old vs new stage-2 arithmetic.

Builds a mixed corpus (camera-size JPEG photos of 4000x3000 and 3000x2000, smaller images, short clips, texts and
fused text+image items) and measures, in this one process and alternating, the items per second of
``ItemProcessor.prepare`` (media decoding, the two-stage pixels, tokenizing) run:

- one item at a time in the foreground;
- by ``unite.data.workers.PreparationWorkers`` (worker processes, pixels back through shared memory) with 1 and
  N workers, started before the clock;
- by a thread pool of 1 and N threads.

It also times stage 2 alone (``patchify``) on stage-1 frames of each size with the new code and with a copy of
the previous arithmetic (float64 rescale, float32 normalisation, tiling, transpose), checking both give the same
bits; and the whole ``UniteEncoder.encode`` (tiny random checkpoint, processes) against one item at a time with
``prepare_in="threads"``, as benchmarks/encode_throughput.py does. Medians of ``--repeats`` runs. CPU
milliseconds per item (this process plus the workers) are reported beside items/s: they hold on a busy machine,
where items/s depends on what else runs (the 1-minute load average is recorded before and after).

    python benchmarks/prepare_throughput.py [--workers 2] [--repeats 3] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unite import UniteEncoder
from unite.data import media
from unite.data.workers import PreparationWorkers, available_cores
from unite.settings import IMAGE_MEAN, IMAGE_STD, LOADER_IMAGE_MAX_PIXELS, LOADER_IMAGE_MIN_PIXELS
from unite.testing import make_image, make_tiny_checkpoint, make_video
from unite.types import to_item

WORDS = "a red circle on a white background next to a blue square and a green triangle under the lazy fox".split()
PHOTO_SIZES = [(3000, 4000), (2000, 3000)]


def build_corpus(folder: Path, seed: int = 0) -> list[dict]:
    """4 camera photos, 8 smaller images, 3 clips, 10 texts, 6 fused items: 31 items, shuffled."""
    rng = np.random.default_rng(seed)
    photos = []
    for index, (height, width) in enumerate(PHOTO_SIZES * 2):
        path = folder / f"photo{index}.jpg"
        make_image(height, width, seed=index).save(path, quality=90)
        photos.append(str(path))
    images = []
    for index in range(8):
        path = folder / f"image{index}.jpg"
        make_image(int(rng.integers(200, 1200)), int(rng.integers(200, 1200)), seed=10 + index).save(path, quality=90)
        images.append(str(path))
    clips = [
        str(make_video(folder / f"clip{index}.mp4", frames=48, fps=12, height=240, width=320, seed=index))
        for index in range(3)
    ]
    items: list[dict] = [{"image": path} for path in photos + images] + [{"video": path} for path in clips]
    items += [{"text": " ".join(rng.choice(WORDS, size=int(rng.integers(5, 120))))} for _ in range(10)]
    items += [{"text": "a caption", "image": images[index % len(images)]} for index in range(6)]
    order = rng.permutation(len(items))
    return [items[index] for index in order]


# ------------------------------------------------------------------------------------------- stage 2, old


def old_patchify(frames: list[np.ndarray], min_pixels: int, max_pixels: int) -> np.ndarray:
    """The previous stage 2, kept for the comparison: float64 rescale, float32 normalisation, tile, transpose."""
    height, width = frames[0].shape[:2]
    new_h, new_w = media.smart_resize(height, width, min_pixels, max_pixels)
    resized = np.stack([_old_resize(frame, new_h, new_w) for frame in frames])
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(IMAGE_MEAN, dtype=np.float32), np.asarray(IMAGE_STD, dtype=np.float32)
    normed = ((scaled - mean) / std).transpose(0, 3, 1, 2)
    if normed.shape[0] == 1:
        normed = np.tile(normed, (2, 1, 1, 1))
    t, c, h, w = normed.shape
    patches = normed.reshape(t // 2, 2, c, h // 28, 2, 14, w // 28, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(patches.reshape(-1, c * 2 * 14 * 14))


def _old_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    image = Image.fromarray(frame)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image)


def patchify_times(repeats: int) -> list[dict]:
    """Stage 2 alone, old vs new, timed alternately (median ms), and whether the bits agree: on stage-1 frames
    of each size (the stage-2 PIL resize included), and on frames already at their stage-2 size (the
    arithmetic alone)."""
    settings = media.EncodingSettings()
    bounds = (settings.image_min_pixels, settings.image_max_pixels)
    cases = [(f"image {h}x{w}", h, w, 1) for h, w in [*PHOTO_SIZES, (480, 640)]] + [("video 16x240x320", 240, 320, 16)]
    rows = []
    for name, height, width, count in cases:
        if count == 1:
            h1, w1 = media.smart_resize(height, width, LOADER_IMAGE_MIN_PIXELS, LOADER_IMAGE_MAX_PIXELS)
            frames = [np.asarray(make_image(height, width, seed=1).resize((w1, h1), Image.Resampling.BICUBIC))]
        else:
            frames = [np.asarray(make_image(height, width, seed=i)) for i in range(count)]
        h2, w2 = media.smart_resize(*frames[0].shape[:2], *bounds)
        at_size = [np.asarray(Image.fromarray(frame).resize((w2, h2), Image.Resampling.BICUBIC)) for frame in frames]
        for label, given in (("with the stage-2 resize", frames), ("arithmetic alone", at_size)):
            same = np.array_equal(old_patchify(given, *bounds), media.patchify(given, *bounds).pixel_values)
            old_s, new_s = _alternate(
                lambda g=given: old_patchify(g, *bounds), lambda g=given: media.patchify(g, *bounds), repeats
            )
            rows.append(
                {
                    "case": f"{name}, {label}",
                    "frame": list(given[0].shape[:2]),
                    "old_ms": round(old_s * 1000, 2),
                    "new_ms": round(new_s * 1000, 2),
                    "speedup": round(old_s / new_s, 2),
                    "bit_identical": bool(same),
                }
            )
    return rows


def _alternate(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two calls timed in alternation."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for call, spent in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


# ---------------------------------------------------------------------------------------------- preparation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        encoder = UniteEncoder.from_pretrained(make_tiny_checkpoint(folder / "tiny"), device="cpu")
        corpus = build_corpus(folder)
        items = [to_item(raw) for raw in corpus]
        processor = encoder.processor
        counts = sorted({1, args.workers})
        pools = {count: PreparationWorkers(encoder.tokenizer, encoder.settings, count) for count in counts}
        for pool in pools.values():  # started, and warm, before the clock
            [future.result() for future in [pool.submit(item) for item in items[:4]]]
        runs = {"sequential": lambda: [processor.prepare(item) for item in items]}
        for count in counts:
            runs[f"processes_{count}"] = lambda pool=pools[count]: [f.result() for f in [pool.submit(i) for i in items]]
            runs[f"threads_{count}"] = lambda n=count: _threads(processor.prepare, items, n)
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, run in runs.items():
                pids = pools[int(name.rsplit("_", 1)[1])].pids() if name.startswith("processes") else []
                start, start_cpu = time.perf_counter(), _cpu_seconds(pids)
                run()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(_cpu_seconds(pids) - start_cpu)
        for pool in pools.values():
            pool.close()
        prepare = {name: round(len(items) / statistics.median(t), 3) for name, t in times.items()}
        cpu_ms = {name: round(1000 * statistics.median(t) / len(items), 1) for name, t in cpu.items()}
        top = max(counts)
        ratios = {
            f"processes_{top}_over_threads_{top}": round(prepare[f"processes_{top}"] / prepare[f"threads_{top}"], 2),
            f"processes_{top}_over_processes_1": round(prepare[f"processes_{top}"] / prepare["processes_1"], 2),
            f"threads_{top}_over_threads_1": round(prepare[f"threads_{top}"] / prepare["threads_1"], 2),
            f"processes_{top}_over_sequential": round(prepare[f"processes_{top}"] / prepare["sequential"], 2),
        }
        encode = _encode_times(encoder, corpus, args.repeats)
        encoder.close()
    result = {
        "items": len(items),
        "corpus": "4 photos (2x 4000x3000, 2x 3000x2000 JPEG), 8 images 200-1200 px, 3 clips 240x320, 10 texts, "
        "6 fused text+image",
        "cores": available_cores(),
        "workers": args.workers,
        "repeats": args.repeats,
        "prepare_items_per_s": prepare,
        "prepare_cpu_ms_per_item": cpu_ms,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "prepare_ratios": ratios,
        "encode": encode,
        "patchify": patchify_times(max(args.repeats, 5)),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by this process and the worker processes ``pids`` (user plus system)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _threads(prepare, items, count: int) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(prepare, items))


def _encode_times(encoder: UniteEncoder, corpus: list[dict], repeats: int) -> dict:
    """Whole encode, tiny model: batched (worker processes) vs one item at a time with threads."""
    encoder.encode(corpus[:4], show_progress_bar=False)  # starts the workers
    batched, looped = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        a = encoder.encode(corpus, show_progress_bar=False)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = np.stack(
            [
                encoder.encode([raw], batch_size=1, num_workers=1, prepare_in="threads", show_progress_bar=False)[0]
                for raw in corpus
            ]
        )
        looped.append(time.perf_counter() - start)
    return {
        "batched_items_per_s": round(len(corpus) / statistics.median(batched), 3),
        "one_at_a_time_items_per_s": round(len(corpus) / statistics.median(looped), 3),
        "speedup": round(statistics.median(looped) / statistics.median(batched), 2),
        "min_cosine_between_runs": float(np.min(np.sum(a * b, axis=1))),
    }


if __name__ == "__main__":
    sys.exit(main())
