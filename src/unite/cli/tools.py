"""``unite make-tiny-checkpoint``: a tiny random checkpoint for trying the commands offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "make-tiny-checkpoint",
        help="write a tiny random checkpoint (meaningless embeddings, for offline trials and tests)",
        description="Write a tiny random UNITE checkpoint with the real vision layout and special tokens.",
    )
    parser.add_argument("folder", type=Path, help="where to write it")
    parser.add_argument(
        "--layout",
        choices=["transformers-4.47", "transformers-5"],
        default="transformers-4.47",
        help="weight names of the released checkpoints (default) or of current transformers",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unite.testing import make_tiny_checkpoint

    folder = make_tiny_checkpoint(args.folder, layout=args.layout, seed=args.seed)
    sys.stderr.write(f"unite: wrote a tiny random checkpoint ({args.layout} layout) to {folder}\n")
    return 0
