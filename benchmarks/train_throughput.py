"""Training throughput (pairs/s) and peak memory, with and without GradCache.

Each configuration runs in its own subprocess so that its peak memory is its own (CPU: peak resident set size;
GPU: torch.cuda.max_memory_allocated). A step is one UniteTrainer.training_step on a batch of text-to-image pairs
(captions against shape images) plus an optimizer step.

    python benchmarks/train_throughput.py                       # tiny model on the CPU
    python benchmarks/train_throughput.py --size 2b --device cuda --batch-size 64 --chunk 16 --output r.json
        # Qwen2-VL-2B architecture with random weights (no download), bf16, LoRA, gradient checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run_one(args: argparse.Namespace) -> dict:
    from unite.data.collator import ItemProcessor
    from unite.losses import ContrastiveLoss
    from unite.testing import make_shapes_dataset, make_tiny_checkpoint
    from unite.training.arguments import load_config
    from unite.training.data import PairCollator, PairDataset, TrainSource
    from unite.training.model import build_training_model, training_settings
    from unite.training.trainer import UniteTrainer, training_arguments

    scratch = Path(tempfile.mkdtemp())
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    checkpoint = make_tiny_checkpoint(scratch / "ckpt", size=args.size, dtype=dtype)
    data = make_shapes_dataset(scratch / "data", per_class=max(1, args.batch_size // 12 + 1))
    config = load_config(
        None,
        {
            "model_name_or_path": str(checkpoint),
            "train_data": [str(data)],
            "output_dir": str(scratch / "out"),
            "per_device_train_batch_size": args.batch_size,
            "gradcache_chunk_size": args.chunk,
            "bf16": args.device == "cuda",
            "device": args.device,
            "gradient_checkpointing": True,
            "image_min_pixels": 256 * 28 * 28,
            "image_max_pixels": 256 * 28 * 28,
            "lora_dropout": 0.05,
        },
    )
    model, encoder = build_training_model(config)
    processor = ItemProcessor(encoder.tokenizer, training_settings(config, encoder.settings))
    trainer = UniteTrainer(
        model=model,
        args=training_arguments(config),
        loss_module=ContrastiveLoss(symmetric=True),
        processor=processor,
        gradcache_chunk_size=args.chunk,
    )
    if config.gradient_checkpointing:
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = trainer.create_optimizer()
    dataset = PairDataset([TrainSource(str(data))], processor, data.parent)
    images = [i for i, record in enumerate(dataset.records) if record.target_modality == 2][: args.batch_size]
    batch = PairCollator()([dataset[i] for i in images])
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        trainer.training_step(trainer.model, dict(batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "size": args.size,
        "device": args.device,
        "batch_size": len(images),
        "gradcache_chunk_size": args.chunk,
        "median_step_s": median,
        "pairs_per_s": len(images) / median,
        "peak_memory_gib": peak,
        "peak_memory_kind": "cuda allocated" if args.device == "cuda" else "process RSS",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "2b"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8, help="GradCache chunk size of the second configuration")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.stdout.write(json.dumps(run_one(args)) + "\n")
        return 0
    results = []
    for chunk in (0, args.chunk):
        command = [
            sys.executable,
            __file__,
            "--one",
            "--size",
            args.size,
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--chunk",
            str(chunk),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    text = json.dumps({"runs": results, "torch": torch.__version__}, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
