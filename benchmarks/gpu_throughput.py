"""The one-shot device run of the throughput issue: profile and MFU of encoding on one GPU, before and after.

Writes a Qwen2-VL-2B-sized checkpoint with random weights (bf16) once, then runs benchmarks/profile_encode.py on
it twice per modality (text ~300 tokens, images at 1280 visual tokens, camera photos, clips, fused):

- ``before``: the padded language-model path with preparation in threads (how unite encoded before);
- ``after``: the defaults: packing, preparation in worker processes (``prepare_in="auto"`` above two cores).

Each run's JSON goes to OUT_DIR (``before.json``, ``after.json``) with the card's name, peak, items/s, the
per-stage split, the GPU's idle share and MFU; ``summary.json`` puts the two side by side. Meant to finish in
well under 8 minutes on an H100 / H200 (``--items`` lowers it).

    python benchmarks/gpu_throughput.py OUT_DIR [--items 64] [--modalities text,image,photo,video,fused]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--modalities", default="text,image,photo,video,fused")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.stderr.write("gpu_throughput.py needs a CUDA device\n")
        return 2
    from unite.testing import make_tiny_checkpoint

    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = make_tiny_checkpoint(Path(scratch) / "2b", size="2b", dtype=torch.bfloat16)
        common = [
            sys.executable,
            str(HERE / "profile_encode.py"),
            "--checkpoint",
            str(checkpoint),
            "--model-size",
            "2b",
            "--device",
            "cuda",
            "--items",
            str(args.items),
            "--repeats",
            str(args.repeats),
            "--modalities",
            args.modalities,
        ]
        if args.workers:
            common += ["--workers", str(args.workers)]
        runs = {
            "before": ["--no-packing", "--prepare-in", "threads"],
            "after": [],
        }
        for name, extra in runs.items():
            subprocess.run([*common, *extra, "--output", str(args.output / f"{name}.json")], check=False)
    summary: dict = {"gpu": torch.cuda.get_device_name(), "seconds": time.perf_counter() - started}
    for name in runs:
        path = args.output / f"{name}.json"
        if path.exists():
            found = json.loads(path.read_text())
            summary[name] = {
                modality: {key: entry.get(key) for key in ("items_per_s", "device_idle_share", "mfu", "mfu_2n")}
                for modality, entry in found["modalities"].items()
            }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
