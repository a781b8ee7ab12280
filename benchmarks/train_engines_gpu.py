"""One CUDA GPU: the training engines agree, and GradCache reaches 4096 pairs per step (with its MFU).

For a session with a GPU; one script, under 8 minutes on an H100 / H200, writing OUT/train_engines_gpu.json (the
file is rewritten after every part, so a timeout still leaves the parts that finished).

1. Engines. The same ``--steps`` steps of the same batch of text-to-image pairs (random Qwen2-VL weights of
   ``--model-size``, bf16, LoRA, gradient checkpointing, no dropout), through ``unite.training.trainer.train``
   under ``torchrun --nproc_per_node 1``: plain (DDP's path), DeepSpeed ZeRO-2 and ZeRO-3
   (recipes/deepspeed/zero{2,3}.json) and FSDP (FSDP2 through accelerate). Each run's per-step losses are
   recorded; the report says, per engine, the largest relative difference from the plain run and whether it is
   within ``--tolerance`` (bf16 noise), rather than stopping at the first mismatch. An engine whose package is
   missing (deepspeed) is reported as skipped.
2. GradCache at ``--gradcache-pairs`` (4096) pairs per step on the one card, chunks of ``--chunk``: pairs/s, peak
   memory, the per-step split and MFU from benchmarks/train_throughput.py (``--peak-tflops``, 989 by default).

    python benchmarks/train_engines_gpu.py OUT                   # on the GPU machine
    python benchmarks/train_engines_gpu.py OUT --dry-run         # anywhere: parse, build and check every config
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEEPSPEED = ROOT / "recipes" / "deepspeed"
ENGINES = {
    "plain": {},
    "zero2": {"deepspeed": str(DEEPSPEED / "zero2.json")},
    "zero3": {"deepspeed": str(DEEPSPEED / "zero3.json")},
    "fsdp": {"fsdp": "full_shard auto_wrap"},
}


def engine_overrides(engine: str, args: argparse.Namespace, checkpoint: Path, data: Path, output: Path) -> dict:
    """The training settings of one engine's run: everything equal but the engine."""
    return {
        "model_name_or_path": str(checkpoint),
        "train_data": [str(data)],
        "output_dir": str(output / engine),
        "device": args.device,
        "bf16": args.device == "cuda",
        "lora": True,
        "lora_dropout": 0.0,  # identical steps on every engine
        "gradient_checkpointing": True,
        "per_device_train_batch_size": args.batch_size,
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 1,
        "save_steps": 100_000,
        "dataloader_num_workers": 0,
        "image_min_pixels": args.image_pixels,
        "image_max_pixels": args.image_pixels,
        "report_to": "none",
        "merge_lora": False,
        **ENGINES[engine],
    }


def build_configs(args: argparse.Namespace, checkpoint: Path, data: Path, output: Path) -> dict[str, Any]:
    """Every engine's TrainConfig, validated (unknown fields, bad values and conflicts raise here)."""
    from unite.training.arguments import load_config

    configs = {}
    for engine in args.engines:
        configs[engine] = load_config(None, engine_overrides(engine, args, checkpoint, data, output))
        deepspeed = configs[engine].deepspeed
        if deepspeed and not Path(deepspeed).is_file():
            raise FileNotFoundError(deepspeed)
    return configs


def worker(args: argparse.Namespace) -> int:
    """Inside torchrun: one engine's run; writes OUT/ENGINE.json with its per-step losses when training ends
    (before the final save, so that a failing save still leaves the losses, and its error in the log)."""
    from transformers import TrainerCallback

    from unite.training.trainer import train

    start = time.perf_counter()
    target = args.output / f"{args.worker}.json"

    class Losses(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **_: Any) -> None:
            if logs and "loss" in logs and "train_runtime" not in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            if int(os.environ.get("RANK", "0")) == 0:
                report = {"losses": self.losses, "train_s": time.perf_counter() - start, "steps": state.global_step}
                target.write_text(json.dumps(report) + "\n")

    config = build_configs(args, args.checkpoint, args.data, args.output)[args.worker]
    train(config, callbacks=[Losses()])
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], timeout: float, log: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"returncode": code, "seconds": time.perf_counter() - start, "log_tail": log.read_text()[-1500:]}


def engine_command(engine: str, args: argparse.Namespace, checkpoint: Path, data: Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    command = [*launcher, __file__, str(args.output), "--worker", engine, "--checkpoint", str(checkpoint)]
    command += ["--data", str(data), "--model-size", args.model_size, "--batch-size", str(args.batch_size)]
    command += ["--device", args.device]
    return command + ["--steps", str(args.steps), "--image-pixels", str(args.image_pixels)]


def gradcache_command(args: argparse.Namespace, checkpoint: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).parent / "train_throughput.py"), "--model-size", args.model_size]
    command += ["--device", args.device, "--batch-size", str(args.gradcache_pairs), "--chunk", str(args.chunk)]
    command += ["--steps", "1", "--warmup", "0", "--split-steps", "1", "--only-gradcache"]
    command += ["--image-pixels", str(args.image_pixels), "--peak-tflops", str(args.peak_tflops)]
    return command + ["--checkpoint", str(checkpoint), "--output", str(args.output / "gradcache.json")]


def compare(reference: list[float], losses: list[float], tolerance: float) -> dict[str, Any]:
    """Largest relative difference of ``losses`` from ``reference``, step by step; within ``tolerance`` or not."""
    if len(losses) != len(reference) or not reference:
        return {"match": False, "reason": f"{len(losses)} losses against {len(reference)}"}
    worst = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(losses, reference))
    return {"max_relative_difference": worst, "match": worst <= tolerance}


def main() -> int:
    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    deadline = time.monotonic() + args.budget_s
    scratch = Path(tempfile.mkdtemp(prefix="train-engines-"))
    checkpoint, data = scratch / "checkpoint", scratch / "data" / "train.jsonl"
    report: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "engines": {}}
    result = args.output / "train_engines_gpu.json"
    if args.dry_run:
        build_configs(args, checkpoint, data, args.output)
        report["commands"] = {e: engine_command(e, args, checkpoint, data) for e in args.engines}
        report["commands"]["gradcache"] = gradcache_command(args, checkpoint)
        report["dry_run"] = True
        result.write_text(json.dumps(report, indent=2) + "\n")
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    import torch

    from unite.testing import make_shapes_dataset, make_tiny_checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("train_engines_gpu.py needs a CUDA GPU (or --dry-run, or --device cpu for a smoke run)\n")
        return 2
    report["device"] = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    report["torch"] = torch.__version__
    start = time.perf_counter()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    make_tiny_checkpoint(checkpoint, size=args.model_size, dtype=dtype)
    make_shapes_dataset(data.parent, per_class=max(2, args.batch_size // 12 + 1))
    report["setup_s"] = time.perf_counter() - start
    for engine in args.engines:
        if "deepspeed" in ENGINES[engine] and importlib.util.find_spec("deepspeed") is None:
            report["engines"][engine] = {"skipped": "deepspeed is not installed (pip install deepspeed)"}
            continue
        left = deadline - time.monotonic() - args.gradcache_reserve_s
        if left < 30:
            report["engines"][engine] = {"skipped": "time budget spent"}
            continue
        run = _run(engine_command(engine, args, checkpoint, data), left, args.output / f"{engine}.log")
        losses_file = args.output / f"{engine}.json"
        if losses_file.is_file():
            run.update(json.loads(losses_file.read_text()))
        report["engines"][engine] = run
        result.write_text(json.dumps(report, indent=2) + "\n")
    reference = report["engines"].get("plain", {}).get("losses", [])
    for engine, run in report["engines"].items():
        if engine != "plain" and "losses" in run:
            run["against_plain"] = compare(reference, run["losses"], args.tolerance)
    if args.gradcache_pairs:
        left = deadline - time.monotonic()
        run = _run(gradcache_command(args, checkpoint), max(left, 1), args.output / "gradcache.log")
        if (args.output / "gradcache.json").is_file():
            run["result"] = json.loads((args.output / "gradcache.json").read_text())["runs"][0]
        report["gradcache"] = run
    report["total_s"] = time.perf_counter() - start
    result.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2)[-6000:] + "\n")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="folder for train_engines_gpu.json and the logs")
    parser.add_argument("--dry-run", action="store_true", help="only parse, build and validate every configuration")
    parser.add_argument("--model-size", choices=["tiny", "2b"], default="2b")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step of the engine runs")
    parser.add_argument("--steps", type=int, default=3, help="steps of the engine runs (their losses are compared)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative loss difference allowed (bf16)")
    parser.add_argument("--image-pixels", type=int, default=64 * 28 * 28, help="pixels of every image")
    parser.add_argument("--gradcache-pairs", type=int, default=4096, help="pairs per GradCache step (0: skip)")
    parser.add_argument("--chunk", type=int, default=128, help="GradCache chunk size")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 / H200 dense bf16")
    parser.add_argument("--budget-s", type=float, default=460.0, help="stop starting parts after this many seconds")
    parser.add_argument("--gradcache-reserve-s", type=float, default=170.0, help="seconds kept for the GradCache part")
    parser.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
