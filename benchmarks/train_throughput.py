"""Training throughput (pairs/s), peak memory, a per-step time split and MFU, with and without GradCache.

Each configuration runs in its own subprocess so that its peak memory is its own (CPU: peak resident set size;
GPU: torch.cuda.max_memory_allocated). A step is one UniteTrainer.training_step on a batch of text-to-image pairs
(captions against shape images) plus gradient clipping and an optimizer step.

The first ``--steps`` timed steps run untouched and give pairs/s, the step time and MFU. Then ``--steps`` more run
with timers (synchronising the GPU at every boundary, so these steps are a little slower) and give the split:
data loading (records to examples), collation (examples to padded tensors), the vision tower's forward, the
language model's forward (each split into with and without a graph: GradCache's first pass has none), the loss,
backward, the optimizer (clipping, step, zeroing) and what is left (moving tensors, pooling, Python).

MFU = model FLOPs / (step seconds * peak); model FLOPs from the model's weight matrices and the step's real token
counts, convention in benchmarks/train_flops.py (forward 2 N per token, backward 2 N for activation gradients plus
2 N for weight gradients of trained weights only, LoRA 6 N, attention s**2 terms; recomputation by gradient
checkpointing or GradCache's first pass counts toward HFU only). ``--peak-tflops`` defaults to 989, an H100 or
H200's dense bf16 peak; the CPU figures are against that same peak unless told otherwise.

    python benchmarks/train_throughput.py                       # tiny model on the CPU
    python benchmarks/train_throughput.py --model-size 2b --device cuda --batch-size 128 --chunk 16 --output r.json
        # Qwen2-VL-2B architecture with random weights (no download), bf16, LoRA, gradient checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_flops beside this file


class _Split:
    """Seconds per phase of a step, the device synchronised at every boundary."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.seconds: dict[str, float] = {}
        self.on = False

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, name: str, start: float) -> None:
        if self.on:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start

    def timed(self, name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = self.now() if self.on else 0.0
            result = function(*args, **kwargs)
            self.add(name, start)
            return result

        return wrapper

    def hook(self, module: torch.nn.Module, name: str) -> None:
        """Time ``module``'s forward calls (not the recomputation in backward: that runs its layers, not it)."""
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(self.now() if self.on else 0.0))

        def done(*_: Any) -> None:
            self.add(name if torch.is_grad_enabled() else f"{name}_no_grad", starts.pop())

        module.register_forward_hook(done)


def _instrument(trainer: Any, split: _Split) -> None:
    from train_flops import _inner

    inner = _inner(trainer.model)
    split.hook(inner.visual, "vision_forward")
    split.hook(inner.language_model, "language_forward")
    trainer.processor.collate = split.timed("collation", trainer.processor.collate)
    trainer.loss_terms = split.timed("loss", trainer.loss_terms)
    trainer.accelerator.backward = split.timed("backward", trainer.accelerator.backward)


def run_one(args: argparse.Namespace) -> dict:
    from train_flops import count_parameters, step_flops, step_tokens

    from unite.data.collator import ItemProcessor
    from unite.losses import ContrastiveLoss
    from unite.testing import make_shapes_dataset, make_tiny_checkpoint
    from unite.training.arguments import load_config
    from unite.training.data import PairCollator, PairDataset, TrainSource
    from unite.training.model import build_training_model, training_settings
    from unite.training.trainer import UniteTrainer, training_arguments

    if args.threads:
        torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp())
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    checkpoint = args.checkpoint or make_tiny_checkpoint(scratch / "ckpt", size=args.size, dtype=dtype)
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
            "image_min_pixels": args.image_pixels,
            "image_max_pixels": args.image_pixels,
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
    split = _Split(args.device)
    _instrument(trainer, split)
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]

    def step() -> None:
        start = split.now() if split.on else 0.0
        batch = PairCollator()([dataset[i] for i in images])
        split.add("data_loading", start)
        trainer.training_step(trainer.model, batch)
        start = split.now() if split.on else 0.0
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        split.add("optimizer", start)

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for number in range(args.warmup + args.steps):
        start = split.now()
        step()
        if number >= args.warmup:
            times.append(split.now() - start)
    split.on = True
    split_total = 0.0
    split_steps = args.split_steps or args.steps
    for _ in range(split_steps):
        start = split.now()
        step()
        split_total += split.now() - start
    median = statistics.median(times)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    sample = PairCollator()([dataset[i] for i in images])
    tokens = step_tokens([processor.collate(sample[side]) for side in UniteTrainer._sides(sample)])
    counts = count_parameters(trainer.model)
    flops = step_flops(counts, tokens, gradient_checkpointing=config.gradient_checkpointing, gradcache=bool(args.chunk))
    peak_flops = args.peak_tflops * 1e12
    per_step = {name: seconds / split_steps for name, seconds in sorted(split.seconds.items())}
    per_step["other"] = split_total / split_steps - sum(per_step.values())
    return {
        "size": args.size,
        "device": args.device,
        "batch_size": len(images),
        "gradcache_chunk_size": args.chunk,
        "median_step_s": median,
        "pairs_per_s": len(images) / median,
        "peak_memory_gib": peak,
        "peak_memory_kind": "cuda allocated" if args.device == "cuda" else "process RSS",
        "image_pixels": args.image_pixels,
        "split_step_s": split_total / split_steps,
        "split_s_per_step": per_step,
        "split_share": {name: seconds / (split_total / split_steps) for name, seconds in per_step.items()},
        "tokens_per_step": {
            "language": tokens.language_tokens,
            "vision_patches": tokens.vision_patches,
            "sequences": tokens.sequences,
        },
        "parameters": {
            key: value
            for key, value in vars(counts).items()
            if key in ("vision", "merger", "language", "lora_language", "lora_vision", "language_trainable")
        },
        **flops,
        "peak_tflops": args.peak_tflops,
        "model_tflops_per_s": flops["model_flops"] / median / 1e12,
        "mfu": flops["model_flops"] / (median * peak_flops),
        "hfu": flops["hardware_flops"] / (median * peak_flops),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", "--model-size", dest="size", choices=["tiny", "2b"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8, help="GradCache chunk size of the second configuration")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--split-steps", type=int, default=0, help="instrumented steps for the split (0: --steps)")
    parser.add_argument("--image-pixels", type=int, default=256 * 28 * 28, help="pixels of every image (fixed)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint folder (else a random one is made)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak FLOP/s of the device, in TFLOP/s")
    parser.add_argument("--only-gradcache", action="store_true", help="skip the plain step (too large a batch)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.stdout.write(json.dumps(run_one(args)) + "\n")
        return 0
    results = []
    for chunk in (args.chunk,) if args.only_gradcache else (0, args.chunk):
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
            "--peak-tflops",
            str(args.peak_tflops),
            "--split-steps",
            str(args.split_steps),
            "--image-pixels",
            str(args.image_pixels),
            "--threads",
            str(args.threads),
            *(["--checkpoint", str(args.checkpoint)] if args.checkpoint else []),
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
