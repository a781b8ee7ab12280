"""``unite train`` and ``unite merge-lora``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from unite.errors import ConfigError

__all__ = ["add_parser"]

TRAIN_EPILOG = """\
Every field of the recipe can be overridden as --FIELD VALUE (values are read as YAML: numbers, true/false,
lists such as '[a.jsonl, {path: b.jsonl, weight: 2}]'). Fields: see docs/training.md or `unite train --fields`.

examples:
  unite train --config recipes/stage1_adaptation.yaml --model_name_or_path Qwen/Qwen2-VL-2B-Instruct
  torchrun --nproc_per_node 8 -m unite.cli.main train --config recipes/stage1_adaptation.yaml \\
      --deepspeed recipes/deepspeed/zero1.json
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a UNITE model (stage 1 or 2) from a YAML recipe",
        description="Train with a recipe; any field can be overridden on the command line.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="recipe YAML (see recipes/)")
    parser.add_argument("--fields", action="store_true", help="list every field with its default and help, then exit")
    parser.set_defaults(run=run_train)
    merge = commands.add_parser(
        "merge-lora",
        help="merge a LoRA adapter into its base checkpoint",
        description="Load BASE strictly, apply ADAPTER, merge, and write a plain checkpoint that `unite encode` loads.",
    )
    merge.add_argument("adapter", type=Path, help="adapter folder (adapter_config.json, adapter_model.safetensors)")
    merge.add_argument("--base", required=True, help="base checkpoint folder or Hub id")
    merge.add_argument("--output", required=True, type=Path, help="folder to write")
    merge.add_argument("--device", choices=["cpu", "cuda"], help="where to merge (default cpu)")
    merge.set_defaults(run=run_merge)


def parse_overrides(extra: list[str]) -> dict[str, Any]:
    """``--field value`` pairs (values read as YAML) into a dict; anything else is refused."""
    import yaml

    overrides: dict[str, Any] = {}
    index = 0
    while index < len(extra):
        token = extra[index]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"expected --FIELD VALUE, got {token!r}")
        name = token[2:].replace("-", "_")
        if "=" in name:
            name, value = name.split("=", 1)
            index += 1
        elif index + 1 < len(extra):
            value = extra[index + 1]
            index += 2
        else:
            raise ConfigError(f"{token} needs a value")
        try:
            overrides[name] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            overrides[name] = value
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from unite.training.arguments import TrainConfig, load_config

    if args.fields:
        import dataclasses

        for item in dataclasses.fields(TrainConfig):
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            sys.stdout.write(f"{item.name} (default {default!r}): {item.metadata.get('help', '')}\n")
        return 0
    config = load_config(args.config, parse_overrides(args.extra))
    from unite.training.trainer import train

    summary = train(config)
    _leave_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    sys.stderr.write(
        f"unite: trained {summary['global_step']} steps (mean loss {summary['train_loss']:.4f}); "
        f"checkpoint in {summary['output_dir']}; {summary['skipped_records']} record(s) skipped\n"
    )
    return 0


def _leave_process_group() -> None:
    """Wait for every rank (rank 0 saves last) and close the process group, so that no rank exits mid-collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_merge(args: argparse.Namespace) -> int:
    from unite.training.model import merge_adapter

    merge_adapter(str(args.adapter), args.base, str(args.output), device=args.device)
    sys.stderr.write(f"unite: merged {args.adapter} into {args.base}; wrote {args.output}\n")
    return 0
