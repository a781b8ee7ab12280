"""Per-step overhead of ``unite train`` against a plain PyTorch loop, on the tiny recipe and the CPU.

Both paths train the same tiny checkpoint on the same synthetic shapes data, in the same batches (the same
:class:`PlannedSampler` order and :class:`PairCollator`), with the same loss and an AdamW step with the recipe's
betas, warm-up and clipping. The ``unite`` path is :func:`unite.training.trainer.train`, which is what
``unite train --config recipes/tiny_cpu.yaml`` runs after parsing its arguments; the plain loop has no Trainer,
no accelerate, no callbacks and no logging.

Every run is its own subprocess; runs alternate (unite, plain, unite, ...) so that a busy machine slows both
alike, and each configuration reports the median of ``--repeats`` runs. Steps/s counts the steps after the
first ``--skip`` (start-up, first allocations) up to the last one, epoch boundaries included; the CPU seconds
per step (process time, one thread by default) are less sensitive to other processes than the wall clock.

    python benchmarks/train_overhead.py --output benchmarks/results/train_overhead_cpu.json
    python benchmarks/train_overhead.py --profile     # adds a cProfile of the unite path (top functions)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"


def _config(args: argparse.Namespace, scratch: Path) -> Any:
    from unite.testing import make_shapes_dataset, make_tiny_checkpoint
    from unite.training.arguments import load_config

    checkpoint = scratch / "checkpoint"
    data = scratch / "shapes" / "train.jsonl"
    if not checkpoint.exists():
        make_tiny_checkpoint(checkpoint)
    if not data.exists():
        data = make_shapes_dataset(scratch / "shapes", per_class=8)
    overrides = {
        "model_name_or_path": str(checkpoint),
        "train_data": [str(data)],
        "output_dir": str(scratch / f"out-{time.monotonic_ns()}"),
        "max_steps": args.steps,
        "save_steps": 10_000,
        "dataloader_num_workers": args.workers,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    return load_config(RECIPE, overrides)


def _unite(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import TrainerCallback

    from unite.training.trainer import train

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.losses: list[float] = []
            self.epoch_starts: list[int] = []

        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            self.epoch_starts.append(len(self.wall))

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **__: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    clock = Clock()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    train(config, callbacks=[clock])
    result = _rates(clock.wall, clock.cpu, clock.epoch_starts, args.skip)
    result["first_logged_loss"] = clock.losses[0] if clock.losses else None
    if profiler is not None:
        profiler.disable()
        result["profile"] = _top(profiler, args.profile_rows)
    return result


def _plain(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The same training with nothing but torch: DataLoader, forward, loss, backward, clip, AdamW, schedule."""
    from torch.utils.data import DataLoader
    from transformers import set_seed

    from unite.data.collator import ItemProcessor
    from unite.losses import ContrastiveLoss, gather_batch
    from unite.training.data import PairCollator, PairDataset, PlannedSampler, TrainSource
    from unite.training.model import build_training_model, training_settings

    set_seed(config.seed)
    model, encoder = build_training_model(config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    processor = ItemProcessor(encoder.tokenizer, training_settings(config, encoder.settings))
    dataset = PairDataset([TrainSource.parse(entry) for entry in config.train_data], processor)
    sampler = PlannedSampler(dataset, config.seed, config.per_device_train_batch_size)
    loss_module = ContrastiveLoss(
        temperature=config.temperature, symmetric=config.loss == "symmetric", modality_mask=config.modality_mask
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, betas=(0.9, config.adam_beta2), weight_decay=config.weight_decay
    )
    warmup = max(1, config.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / warmup))

    def embed(features: list) -> torch.Tensor:
        return model(**processor.collate(features))

    wall, cpu, losses, epoch_starts = [], [], [], []
    model.train()
    loader = DataLoader(  # torch's defaults: workers (if any) start with every epoch's iterator
        dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=PairCollator(),
        num_workers=config.dataloader_num_workers,
    )
    epoch = 0
    while len(wall) < config.max_steps:
        sampler.set_epoch(epoch)
        epoch_starts.append(len(wall))
        for batch in loader:
            sides = {side: embed(batch[side]) for side in ("query", "candidate")}
            negative = embed(batch["negative"]) if batch["negative"] else None
            gathered = gather_batch(
                sides["query"],
                sides["candidate"],
                batch["ids"],
                batch["target_modality"],
                negative,
                batch["negative_owner"] if negative is not None else None,
            )
            loss = loss_module(**gathered)["loss"]
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
            if len(wall) == config.max_steps:
                break
        epoch += 1
    result = _rates(wall, cpu, epoch_starts, args.skip)
    result["first_logged_loss"] = losses[0]
    return result


def _rates(wall: list[float], cpu: list[float], epoch_starts: list[int], skip: int) -> dict[str, Any]:
    """Steps/s and CPU s/step after ``skip`` steps; the median step, and what a step that opens an epoch adds."""
    steps = len(wall) - skip
    intervals = {index: wall[index] - wall[index - 1] for index in range(skip, len(wall))}
    median = statistics.median(intervals.values())
    openers = [intervals[index] for index in epoch_starts if index in intervals]
    return {
        "timed_steps": steps,
        "steps_per_s": steps / (wall[-1] - wall[skip - 1]),
        "cpu_s_per_step": (cpu[-1] - cpu[skip - 1]) / steps,
        "median_step_s": median,
        "epoch_start_extra_s": statistics.mean(openers) - median if openers else 0.0,
    }


def _top(profiler: Any, rows: int) -> list[dict[str, Any]]:
    """The functions with the most own time (tottime), as rows of the JSON."""
    import pstats

    stats = pstats.Stats(profiler).stats
    entries = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:rows]
    return [
        {
            "function": f"{Path(name[0]).name}:{name[1]}({name[2]})",
            "calls": values[1],
            "tottime_s": round(values[2], 4),
            "cumtime_s": round(values[3], 4),
        }
        for name, values in entries
    ]


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    config = _config(args, args.scratch)
    return (_unite if args.path == "unite" else _plain)(config, args)


def _child(args: argparse.Namespace, path: str, profile: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", path, "--scratch", str(args.scratch)]
    command += ["--steps", str(args.steps), "--skip", str(args.skip), "--threads", str(args.threads)]
    command += ["--workers", str(args.workers), "--profile-rows", str(args.profile_rows)]
    command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    command += ["--profile"] if profile else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (tiny recipe: 7 per epoch)")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of the rate")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--workers", type=int, default=0, help="dataloader_num_workers (the tiny recipe: 0)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="turn it on (the tiny recipe: off)")
    parser.add_argument("--profile", action="store_true", help="one more unite run under cProfile")
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--label", default="", help="free text stored with the result (e.g. before / after)")
    parser.add_argument("--output", type=Path, help="write (or add to) this JSON file")
    parser.add_argument("--one", choices=["unite", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.path = args.one
        sys.stdout.write(json.dumps(run_one(args)) + "\n")
        return 0
    args.scratch = args.scratch or Path(tempfile.mkdtemp(prefix="train-overhead-"))
    runs: dict[str, list[dict[str, Any]]] = {"unite": [], "plain": []}
    for _ in range(args.repeats):
        for path in ("unite", "plain"):
            runs[path].append(_child(args, path, profile=False))
    summary = {path: _median(results) for path, results in runs.items()}
    result = {
        "label": args.label,
        "recipe": "recipes/tiny_cpu.yaml",
        "steps": args.steps,
        "skip": args.skip,
        "threads": args.threads,
        "dataloader_num_workers": args.workers,
        "gradient_checkpointing": args.gradient_checkpointing,
        "median": summary,
        "unite_over_plain_steps_per_s": summary["unite"]["steps_per_s"] / summary["plain"]["steps_per_s"],
        "unite_over_plain_cpu_s_per_step": summary["unite"]["cpu_s_per_step"] / summary["plain"]["cpu_s_per_step"],
        "runs": runs,
        "torch": torch.__version__,
    }
    if args.profile:
        result["unite_profile"] = _child(args, "unite", profile=True)["profile"]
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        previous = json.loads(args.output.read_text()) if args.output.exists() else {}
        entries = previous.get("measurements", []) if isinstance(previous, dict) else []
        args.output.write_text(json.dumps({"measurements": [*entries, result]}, indent=2) + "\n")
    return 0


def _median(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("steps_per_s", "cpu_s_per_step", "median_step_s", "epoch_start_extra_s")
    return {key: statistics.median(r[key] for r in results) for key in keys}


if __name__ == "__main__":
    sys.exit(main())
