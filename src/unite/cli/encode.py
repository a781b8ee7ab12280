"""``unite encode``: a JSON lines file of items to an embeddings file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from unite.cli.options import add_model_options, encoder_from_args
from unite.data.jsonl import read_item_lines
from unite.errors import ConfigError, UniteError
from unite.models.encoder import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS_PER_BATCH, DEFAULT_NUM_WORKERS
from unite.outputs import FORMATS, mask_path, write_embeddings

__all__ = ["add_parser", "run"]

EPILOG = """\
ITEMS.jsonl holds one item per line: {"text": ..., "image": path or [paths], "video": path or [frame paths]},
with <|IMAGE|> / <|VIDEO|> placeholders in the text (media without placeholders go before the text); an
optional "id" is kept in .parquet output. Relative paths resolve against the folder of ITEMS.jsonl.

OUT.npy holds float32 L2-normalised rows in input order. With --on-error skip, the rows of failed lines are
zero, OUT.mask.npy marks the embedded rows, and every failed line is listed in the errors file.

example:
  unite encode items.jsonl --model friedrichor/Unite-Base-Qwen2-VL-2B --output vectors.npy --video-frames 16
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "encode",
        help="embed the items of a JSON lines file",
        description="Embed every item of ITEMS.jsonl with a UNITE checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("items", metavar="ITEMS.jsonl", type=Path, help="one item per line")
    parser.add_argument("--output", "-o", required=True, type=Path, help=f"embeddings file ({' or '.join(FORMATS)})")
    add_model_options(parser)
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="most items per batch (default %(default)s)"
    )
    run_group.add_argument(
        "--max-tokens-per-batch",
        type=int,
        default=DEFAULT_MAX_TOKENS_PER_BATCH,
        help="most padded tokens per batch (default %(default)s)",
    )
    run_group.add_argument(
        "--workers", type=int, default=DEFAULT_NUM_WORKERS, help="media decoding threads (default %(default)s)"
    )
    run_group.add_argument("--instruction", help="task instruction prepended to every item (Instruct checkpoints)")
    run_group.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="raise: stop at the first bad line, writing nothing (default); skip: embed the rest, list the bad lines",
    )
    run_group.add_argument("--errors", type=Path, help="errors file for --on-error skip (default: OUT.errors.jsonl)")
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.suffix not in FORMATS:
        raise ConfigError(f"--output must end with {' or '.join(FORMATS)}, got {args.output}")
    if args.errors is not None and args.on_error == "raise":
        raise ConfigError("--errors only applies with --on-error skip")
    records = read_item_lines(args.items)
    if args.on_error == "raise":
        bad = next((record for record in records if record.error is not None), None)
        if bad is not None:
            raise bad.error
    encoder = encoder_from_args(args)
    rows = [row for row, record in enumerate(records) if record.item is not None]
    valid = [records[row] for row in rows]
    try:
        result = encoder.encode_with_errors(
            [record.item for record in valid],
            batch_size=args.batch_size,
            max_tokens_per_batch=args.max_tokens_per_batch,
            num_workers=args.workers,
            instruction=args.instruction,
            show_progress_bar=False if args.no_progress else None,
            on_error=args.on_error,
        )
    except UniteError as error:
        index = getattr(error, "item_index", None)
        if index is None:
            raise
        raise type(error)(f"{args.items}:{valid[index].line}: {error.reason}") from error  # type: ignore[attr-defined]
    # Place the rows of parsed lines among every line of the file.
    embeddings = np.zeros((len(records), encoder.embedding_dim), dtype=np.float32)
    ok = np.zeros(len(records), dtype=bool)
    embeddings[rows] = result.embeddings
    ok[rows] = result.ok
    failures = [(record.line, str(record.error)) for record in records if record.error is not None]
    failures += [
        (valid[index].line, f"{args.items}:{valid[index].line}: {message}") for index, message in result.errors
    ]
    failures.sort()
    ids = [record.id for record in records]
    written = write_embeddings(
        args.output,
        embeddings,
        ok=ok if args.on_error == "skip" else None,
        ids=ids if any(value is not None for value in ids) else None,
        lines=[record.line for record in records],
    )
    summary = f"unite: encoded {int(ok.sum())} of {len(records)} items into {written[0]}"
    if args.on_error == "skip":
        errors_path = args.errors or args.output.with_name(args.output.stem + ".errors.jsonl")
        errors_path.write_text(
            "".join(json.dumps({"line": line, "error": message}) + "\n" for line, message in failures)
        )
        summary += f" (row mask {mask_path(args.output).name if args.output.suffix == '.npy' else 'in column ok'}"
        summary += f"; {len(failures)} failed, listed in {errors_path})"
    sys.stderr.write(summary + "\n")
    return 0
