"""Where encoding time goes, per modality: decoding, pixel preparation, tokenising, vision tower, language model;
the device's idle share while ``encode`` runs; and MFU.

For each modality (``text`` ~300 tokens, ``image`` at 1280 visual tokens, ``photo`` a 4000x3000 camera JPEG,
``video`` clips sampled at 1 frame/s, ``fused`` text + image) it measures:

- CPU stages, one item at a time on one thread (seconds per item, median): ``decode`` (read and decode to RGB:
  Pillow open + load + convert for images, PyAV decoding of the sampled frames for videos), ``pixels`` (the
  two-stage pipeline: both resizes, rescale, normalise, patches = loading the media minus decoding), ``tokenise``
  (prompt, tokenizer, pad expansion = ``ItemProcessor.prepare`` minus loading the media);
- model stages inside ``encode`` (seconds per item, summed over the run's batches, the device synchronised at
  each boundary): ``vision`` (the vision tower) and ``language`` (the rest of the forward: embeddings, decoder,
  pooling);
- end to end: items/s of ``UniteEncoder.encode`` on the modality's items, and the device's idle share = 1 -
  (time inside the model's forward) / wall time;
- MFU: model FLOPs from the configuration and the actual token counts, divided by time and ``--peak-tflops``
  (default: 989 for H100 / H200 dense bf16; none on a CPU unless given). FLOPs count the matrix products of one
  forward: 2 x parameters x tokens for every linear layer (vision tower over its patches, decoder over its tokens,
  embeddings left out), plus attention: 4 x patches^2 x width per vision layer (bidirectional, per image) and
  2 x tokens^2 x width per decoder layer (causal, per item). ``mfu_2n`` is the same without attention, the
  convention of the issue's estimate (an image at 1280 visual tokens ~11 TFLOP on the 2B model). ``mfu_model``
  divides by time inside the forward, ``mfu`` by the wall time of ``encode``.

    python benchmarks/profile_encode.py [--model-size tiny|2b] [--device cpu|cuda] [--items 32]
        [--modalities text,image,photo,video,fused] [--no-packing] [--prepare-in threads|processes] [--output F]

On a GPU (``--model-size 2b``: the published Qwen2-VL-2B configuration with random weights, bf16) this is the
script of the issue's MFU targets; see benchmarks/gpu_throughput.py for the one-shot device run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unite import UniteEncoder
from unite.data import media
from unite.testing import make_image, make_tiny_checkpoint, make_video
from unite.types import to_item

WORDS = "a red circle on a white background next to a blue square and a green triangle under the lazy fox".split()
MODALITIES = ("text", "image", "photo", "video", "fused")
#: Dense bf16 peak TFLOP/s by device name (no sparsity).
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def build_items(folder: Path, modality: str, count: int, tokenizer: Any) -> list[dict]:
    rng = np.random.default_rng(len(modality))
    if modality in ("text", "fused"):
        texts = [_text_of(tokenizer, 300, rng) for _ in range(count)]
    if modality == "text":
        return [{"text": text} for text in texts]
    if modality in ("image", "fused"):
        paths = []
        for index in range(4):  # 1120 x 896 = 1280 visual tokens after both resizes
            path = folder / f"image{index}.jpg"
            make_image(1120, 896, seed=index).save(path, quality=90)
            paths.append(str(path))
        if modality == "image":
            return [{"image": paths[i % 4]} for i in range(count)]
        return [{"text": texts[i], "image": paths[i % 4]} for i in range(count)]
    if modality == "photo":
        paths = []
        for index in range(2):
            path = folder / f"photo{index}.jpg"
            make_image(3000, 4000, seed=10 + index).save(path, quality=90)
            paths.append(str(path))
        return [{"image": paths[i % 2]} for i in range(count)]
    clips = [
        str(make_video(folder / f"clip{i}.mp4", frames=240, fps=24, height=360, width=480, seed=i, gop=24))
        for i in range(2)
    ]
    return [{"video": clips[i % 2]} for i in range(max(4, count // 2))]


def _text_of(tokenizer: Any, tokens: int, rng: np.random.Generator) -> str:
    """Words until the tokenizer counts ``tokens`` tokens."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < tokens:
        words += list(rng.choice(WORDS, size=16))
    return " ".join(words)


# ------------------------------------------------------------------------------------------------- CPU stages


def _timed(function: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def _decode_seconds(item: Any, settings: Any) -> float:
    """Reading and decoding the item's media to RGB, nothing else."""
    from PIL import Image

    seconds = 0.0
    for source in item.images:
        start = time.perf_counter()
        with Image.open(source) as image:
            image.load()
            image.convert("RGB")
        seconds += time.perf_counter() - start
    for source in item.videos:
        info = media._video_info(source, settings)
        frames = media.video_frame_count(info, settings)
        indices = media.sample_indices(info.frames, frames)
        seconds += _timed(media._decode_frames, source, settings, indices)[1]
    return seconds


def cpu_stages(encoder: UniteEncoder, items: list[dict], folder: Path) -> dict[str, float]:
    """Median seconds per item of decode, pixels and tokenise, one item at a time."""
    settings = encoder.settings
    found: dict[str, list[float]] = {"decode": [], "pixels": [], "tokenise": []}
    for raw in items[: min(len(items), 8)]:
        item = to_item(raw)
        decode = _decode_seconds(item, settings)
        loading = sum(_timed(media.load_image, s, settings)[1] for s in item.images)
        loading += sum(_timed(media.load_video, s, settings)[1] for s in item.videos)
        _, prepare = _timed(encoder.processor.prepare, item)
        found["decode"].append(decode)
        found["pixels"].append(max(loading - decode, 0.0))
        found["tokenise"].append(max(prepare - loading, 0.0))
    return {name: statistics.median(values) for name, values in found.items()}


# ----------------------------------------------------------------------------------------------- model stages


class ModelClock:
    """Seconds inside the vision tower and inside the whole forward (device synchronised at each boundary)."""

    def __init__(self, encoder: UniteEncoder) -> None:
        self.cuda = encoder.device.type == "cuda"
        self.vision = 0.0
        self.forward = 0.0
        self._marks: dict[str, float] = {}
        model = encoder.model
        handles = [
            model.model.visual.register_forward_pre_hook(lambda *_: self._start("vision")),
            model.model.visual.register_forward_hook(lambda *_: self._stop("vision")),
            model.register_forward_pre_hook(lambda *_: self._start("forward")),
            model.register_forward_hook(lambda *_: self._stop("forward")),
        ]
        self._handles = handles

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, name: str) -> None:
        self._sync()
        self._marks[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self._sync()
        setattr(self, name, getattr(self, name) + time.perf_counter() - self._marks.pop(name))

    def reset(self) -> None:
        self.vision = self.forward = 0.0

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


# ------------------------------------------------------------------------------------------------------- FLOPs


def model_shapes(encoder: UniteEncoder) -> dict[str, float]:
    model = encoder.model.model
    vision_params = sum(p.numel() for p in model.visual.parameters())
    language = model.language_model
    language_params = sum(p.numel() for n, p in language.named_parameters() if "embed_tokens" not in n)
    vision = encoder.model.config.vision_config
    text = encoder.model.config.text_config
    return {
        "vision_params": vision_params,
        "language_params": language_params,
        "vision_layers": vision.depth,
        "vision_width": vision.embed_dim,
        "language_layers": text.num_hidden_layers,
        "language_width": text.hidden_size,
    }


def item_flops(features: Any, shapes: dict[str, float]) -> tuple[float, float]:
    """(FLOPs with attention, FLOPs of the 2N convention) of one item's forward."""
    tokens = len(features.input_ids)
    patches = [int(np.prod(v.grid_thw)) for v in (*features.images, *features.videos)]
    linear = 2 * shapes["vision_params"] * sum(patches) + 2 * shapes["language_params"] * tokens
    attention = sum(4 * p * p * shapes["vision_width"] * shapes["vision_layers"] for p in patches)
    attention += 2 * tokens * tokens * shapes["language_width"] * shapes["language_layers"]
    return linear + attention, linear


# --------------------------------------------------------------------------------------------------------- run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-size", choices=["tiny", "2b"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--items", type=int, default=32, help="items per modality")
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens-per-batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="preparation workers (default: encode's)")
    parser.add_argument("--prepare-in", default=None, help="threads or processes, where encode supports it")
    parser.add_argument("--no-packing", action="store_true", help="the padded language-model path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint folder instead of a random one")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    peak = args.peak_tflops
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    if peak is None and gpu:
        peak = next((value for name, value in PEAKS.items() if name in gpu), None)
    results: dict[str, Any] = {
        "model_size": args.model_size,
        "device": args.device,
        "gpu": gpu,
        "dtype": dtype,
        "cpu_threads": torch.get_num_threads(),
        "cores": len(os.sched_getaffinity(0)),
        "peak_tflops": peak,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "modalities": {},
    }

    def save() -> None:
        if args.output:
            args.output.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        checkpoint = args.checkpoint or make_tiny_checkpoint(
            folder / "ckpt", size=args.model_size, dtype=getattr(torch, dtype)
        )
        options: dict[str, Any] = {"device": args.device, "dtype": dtype}
        encoder = UniteEncoder.from_pretrained(checkpoint, **options)
        if hasattr(encoder, "packing"):
            encoder.packing = not args.no_packing
            results["packing"] = encoder.packing
        shapes = model_shapes(encoder)
        results["shapes"] = shapes
        encode_options: dict[str, Any] = {"batch_size": args.batch_size, "show_progress_bar": False}
        if args.max_tokens_per_batch:
            encode_options["max_tokens_per_batch"] = args.max_tokens_per_batch
        if args.workers:
            encode_options["num_workers"] = args.workers
        if args.prepare_in:
            encode_options["prepare_in"] = args.prepare_in
        clock = ModelClock(encoder)
        for modality in args.modalities.split(","):
            items = build_items(folder, modality, args.items, encoder.tokenizer)
            encoder.encode(items[:2], **encode_options)  # warm-up: kernels, workers
            stages = cpu_stages(encoder, items, folder)
            features = [encoder.processor.prepare(to_item(raw)) for raw in items]
            flops = [item_flops(f, shapes) for f in features]
            walls, vision, forward = [], [], []
            for _ in range(args.repeats):
                clock.reset()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                encoder.encode(items, **encode_options)
                walls.append(time.perf_counter() - start)
                vision.append(clock.vision)
                forward.append(clock.forward)
            run = int(np.argsort(walls)[len(walls) // 2])  # the median run
            wall, inside, vision_s = walls[run], forward[run], vision[run]
            total, linear = (sum(values) for values in zip(*flops))
            entry = {
                "items": len(items),
                "tokens_per_item": statistics.mean(len(f.input_ids) for f in features),
                "visual_tokens_per_item": statistics.mean(
                    sum(v.num_tokens for v in (*f.images, *f.videos)) for f in features
                ),
                "seconds_per_item": {
                    **stages,
                    "vision": vision_s / len(items),
                    "language": (inside - vision_s) / len(items),
                },
                "items_per_s": len(items) / wall,
                "wall_seconds": walls,
                "device_idle_share": max(0.0, 1 - inside / wall),
                "tflop_per_item": total / len(items) / 1e12,
                "tflop_per_item_2n": linear / len(items) / 1e12,
            }
            if peak:
                entry["mfu"] = total / wall / (peak * 1e12)
                entry["mfu_model"] = total / inside / (peak * 1e12)
                entry["mfu_2n"] = linear / wall / (peak * 1e12)
            results["modalities"][modality] = entry
            save()
            sys.stderr.write(f"{modality}: {json.dumps(entry)}\n")
        clock.close()
    with contextlib.suppress(Exception):
        del encoder
    save()
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
