"""``unite export sentence-transformers``: a checkpoint as a folder sentence-transformers loads faithfully."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unite.errors import ConfigError

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write a checkpoint in another library's format (sentence-transformers)",
        description="Write a UNITE checkpoint in another library's format.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    st = formats.add_parser(
        "sentence-transformers",
        help="a folder SentenceTransformer(OUT_DIR, trust_remote_code=True) loads, embedding as unite does",
        description=(
            "Write OUT_DIR: the checkpoint's weights, tokenizer and unite_config.json (so unite loads it too), "
            "modules.json, config_sentence_transformers.json and unite_sentence_transformers.py, a custom module "
            "that runs unite's own prompts, pixel pipeline and 1-D positions. Loading it needs "
            "pip install 'unite-embed[st]' and trust_remote_code=True."
        ),
    )
    st.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder or Hugging Face id (owner/name)")
    st.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the folder to write; must not exist or be empty")
    st.add_argument("--revision", help="Hub revision (branch, tag or commit) of the checkpoint")
    st.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the written weights (default: the checkpoint's own)",
    )
    st.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="NAME=INSTRUCTION",
        help="a sentence-transformers prompt, used as the instruction (repeatable; query and document exist, empty)",
    )
    st.add_argument("--default-prompt-name", help="the prompt encode() applies when none is given")
    st.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unite.integrations.sentence_transformers import export

    folder = export(
        args.checkpoint,
        args.out_dir,
        prompts=_parse_prompts(args.prompt),
        default_prompt_name=args.default_prompt_name,
        dtype=args.dtype,
        revision=args.revision,
    )
    sys.stderr.write(f"unite: wrote a sentence-transformers folder to {folder}\n")
    return 0


def _parse_prompts(values: list[str]) -> dict[str, str]:
    prompts: dict[str, str] = {}
    for value in values:
        name, separator, instruction = value.partition("=")
        if not separator or not name.strip():
            raise ConfigError(f"--prompt expects NAME=INSTRUCTION, got {value!r}")
        prompts[name.strip()] = instruction
    return prompts
