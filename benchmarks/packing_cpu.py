"""Packed vs padded batches on the CPU: items/s of the model alone (features prepared beforehand, no decoding).

Two random models: the tiny test checkpoint of ``unite.testing``, and a small-but-not-tiny one (text hidden 256,
4 layers, MLP 1024) where attention and MLP costs show. Two workloads on each:

- ``mixed_batch``: one batch of items of very different lengths (short and long texts, images of several
  sizes, fused items) in shuffled order, the case where padding wastes most;
- ``sorted_batches``: the same items through ``embed_prepared`` (sorted by length, token-budget batches), the
  way ``encode`` batches them, where padding is already small.

Packed and padded runs alternate in this one process; the median of ``--repeats`` runs of each is reported with
their ratio, and the embeddings of both are checked to agree.

    python benchmarks/packing_cpu.py [--items 48] [--repeats 3] [--output benchmarks/results/packing_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unite import UniteEncoder
from unite.models.modeling import UniteQwen2VL
from unite.testing import make_image, make_tokenizer, tiny_config
from unite.types import to_item

WORDS = "a red circle on a white background next to a blue square and a green triangle under the lazy fox".split()


def build_items(folder: Path, count: int, seed: int = 0) -> list:
    """Texts of 2 to 400 words, images from 60x60 to 500x400 pixels, fused text+image items, shuffled."""
    rng = np.random.default_rng(seed)
    sizes = [(60, 60), (120, 200), (300, 240), (500, 400)]
    images = []
    for index, (height, width) in enumerate(sizes):
        path = folder / f"image{index}.png"
        make_image(height, width, seed=index).save(path)
        images.append(str(path))
    items = []
    for index in range(count):
        words = " ".join(rng.choice(WORDS, size=int(rng.choice([2, 10, 40, 150, 400]))))
        kind = index % 4
        if kind in (0, 1):
            items.append(words)
        elif kind == 2:
            items.append({"image": images[index % len(images)]})
        else:
            items.append({"text": words[:200], "image": images[(index // 4) % len(images)]})
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def small_config(tokenizer):
    """The tiny config widened: text hidden 256, 4 layers, MLP 1024, 8 heads (2 key/value heads)."""
    config = tiny_config(tokenizer)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 256, 1024, 4
    text.num_attention_heads, text.num_key_value_heads = 8, 2
    text.layer_types = ["full_attention"] * 4
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [4, 6, 6]}  # head_dim 32: 16 frequencies
    text.max_window_layers = 4
    config.vision_config.hidden_size = 256
    config.vision_config.depth = 4
    config.vision_config.embed_dim = 64
    return config


def build_encoders(size: str) -> tuple[UniteEncoder, UniteEncoder]:
    tokenizer = make_tokenizer()
    config = tiny_config(tokenizer) if size == "tiny" else small_config(tokenizer)
    torch.manual_seed(0)
    model = UniteQwen2VL(config).eval().float()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2 and "embed_tokens" not in name:
                parameter.normal_(0.0, 0.2 if size == "tiny" else 0.05)
    return UniteEncoder(model, tokenizer, packing=True), UniteEncoder(model, tokenizer, packing=False)


def time_run(function, repeats: int) -> tuple[list[float], np.ndarray]:
    seconds, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def measure(size: str, items: list, repeats: int) -> dict:
    packed, padded = build_encoders(size)
    features = [packed.processor.prepare(to_item(item)) for item in items]
    lengths = [len(feature.input_ids) for feature in features]
    workloads = {
        "mixed_batch": lambda encoder: encoder._embed(features),
        "sorted_batches": lambda encoder: encoder.embed_prepared(features, batch_size=32).embeddings,
    }
    results = {
        "text_hidden": packed.model.config.text_config.hidden_size,
        "text_layers": packed.model.config.text_config.num_hidden_layers,
        "items": len(features),
        "tokens_real": sum(lengths),
        "tokens_padded_one_batch": max(lengths) * len(lengths),
        "length_min_median_max": [min(lengths), int(statistics.median(lengths)), max(lengths)],
    }
    for name, workload in workloads.items():
        workload(packed), workload(padded)  # warm up
        times = {"packed": [], "padded": []}
        outputs = {}
        for _ in range(repeats):  # alternate, so drifts of the machine hit both alike
            for mode, encoder in (("packed", packed), ("padded", padded)):
                seconds, outputs[mode] = time_run(lambda encoder=encoder, run=workload: run(encoder), 1)
                times[mode] += seconds
        cosine = float((outputs["packed"] * outputs["padded"]).sum(-1).min())
        packed_rate = len(features) / statistics.median(times["packed"])
        padded_rate = len(features) / statistics.median(times["padded"])
        results[name] = {
            "packed_items_per_s": round(packed_rate, 2),
            "padded_items_per_s": round(padded_rate, 2),
            "packed_over_padded": round(packed_rate / padded_rate, 3),
            "seconds": {mode: [round(s, 4) for s in values] for mode, values in times.items()},
            "min_cosine_packed_vs_padded": cosine,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "packing_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        items = build_items(Path(folder), args.items)
        report = {
            "benchmark": "packing_cpu",
            "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads",
            "torch": torch.__version__,
            "repeats": args.repeats,
            "attention": "sdpa",
            "models": {size: measure(size, items, args.repeats) for size in ("tiny", "small")},
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
