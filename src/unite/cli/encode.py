"""``unite encode``: a JSON lines file of items to an embeddings file, or many sources to a folder of shards."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unite.bulk.engine import ENGINES, BulkJob
from unite.bulk.folder import is_folder_output
from unite.bulk.plan import DEFAULT_SHARD_SIZE
from unite.cli.options import add_model_options, encoder_from_args, setting_overrides
from unite.data.jsonl import JsonlRecord, read_item_lines
from unite.errors import ConfigError, UniteError
from unite.models.encoder import CPU_MAX_TOKENS_PER_BATCH, DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS_PER_BATCH
from unite.outputs import FORMATS, mask_path, write_atomically, write_embeddings
from unite.quantization import Calibration, Precision, calibration_path, quantize_rows

if TYPE_CHECKING:
    from unite.bulk.run import BulkSummary

__all__ = ["add_parser", "run"]

EPILOG = """\
ITEMS.jsonl holds one item per line: {"text": ..., "image": path or [paths], "video": path or [frame paths]},
with <|IMAGE|> / <|VIDEO|> placeholders in the text (media without placeholders go before the text); an
optional "id" (a string or an integer) is kept in .parquet output. Relative paths resolve against the folder
of ITEMS.jsonl.

ITEMS.jsonl is read as bytes, one line per \\n (a trailing \\r is dropped; a final newline adds no line), each
line decoded as UTF-8 on its own; a BOM / U+FEFF at the start of a line is ignored. Blank lines are lines (they
fail as "empty line"), so row N is always line N. A line fails alone when it is not UTF-8, not JSON (nesting
too deep included), not an item, holds a string with a lone surrogate, has an "id" that is not a string or an
integer, or when its media cannot be read or its tokens prepared. A batch that fails inside the model (out of
memory, ...) is retried item by item, so one line cannot take others down.

OUT.npy holds float32 L2-normalised rows, one per line, in input order. --on-error raise (default) stops at the
first bad line with one message FILE:LINE: reason, writing nothing. --on-error skip never stops on a line:
the rows of failed lines are zero, OUT.mask.npy (or the parquet column ok) marks the embedded rows, and every
failed line is listed once in the errors file as {"line": N, "error": "..."}.

--precision quantises the rows as sentence-transformers' quantize_embeddings does: float16 (a cast); int8 / uint8
(N, D), 256 buckets per dimension between that dimension's min and max; binary (int8) / ubinary (uint8) (N, D/8),
the bits of x > 0 packed with numpy.packbits. The int8 / uint8 ranges come from --calibration FILE (OUT.calibration.npz
of an earlier run, or a .npy of calibration embeddings), else from this run's embedded rows (at least 2); they
are written to OUT.calibration.npz (arrays min, max, precision) so later runs can reuse them. Rows of failed
lines stay zero (binary: all bits zero). .parquet stores the quantised rows in the column embedding as lists of
ints (int8 or uint8; binary / ubinary: the packed bytes), with the precision in the schema metadata.

At corpus scale, --output OUT_DIR/ (a trailing /, or an existing folder; a file:// or s3:// URI too) takes one
or more SOURCE files or globs (JSON lines, or Parquet with columns text / image / video / instruction / id) and
writes part-NNNNN.parquet shards of --shard-size rows (columns source, line, id, ok, embedding, error) and
_manifest.json. Rerunning the same command resumes: complete shards are kept, the rest are made; a rerun with
another model, settings, instruction or changed sources is refused, naming what differs. --engine local
prepares items in --workers processes (default: the cores) and runs the model in this process (one replica per
GPU). docs/encoding.md, "At corpus scale", has the contract.

examples:
  unite encode items.jsonl --model friedrichor/Unite-Base-Qwen2-VL-2B --output vectors.npy --video-frames 16
  unite encode 'corpus/*.jsonl' more.parquet --model ... --output shards/ --on-error skip
  unite encode corpus.jsonl --model ... --output corpus.npy --precision int8
  unite encode queries.jsonl --model ... --output queries.npy --precision int8 --calibration corpus.calibration.npz
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "encode",
        help="embed the items of a JSON lines file (or of many files, into shards)",
        description="Embed every item of ITEMS.jsonl (or of every SOURCE, into a folder of shards) with a UNITE "
        "checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        metavar="SOURCE",
        nargs="+",
        help="ITEMS.jsonl, one item per line; with --output OUT_DIR/: JSON lines or Parquet files, or globs",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        help=f"embeddings file ({' or '.join(FORMATS)}), or a folder of shards (OUT_DIR/, or a URI ending with /)",
    )
    add_model_options(parser)
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="most items per batch (default %(default)s)"
    )
    run_group.add_argument(
        "--max-tokens-per-batch",
        type=int,
        help="most tokens per batch: the items' own when packed, the longest times the count with --no-packing; on "
        f"CUDA also no more than free memory allows (default {DEFAULT_MAX_TOKENS_PER_BATCH} on a GPU, "
        f"{CPU_MAX_TOKENS_PER_BATCH} on the CPU)",
    )
    run_group.add_argument(
        "--workers",
        type=int,
        help="worker processes preparing media (decoding, pixels, tokens; default: the cores available)",
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
    bulk = parser.add_argument_group("corpus scale (--output OUT_DIR/)")
    bulk.add_argument("--engine", choices=ENGINES, help="local: this machine (default); ray: a Ray cluster")
    bulk.add_argument("--ray-address", help="the Ray cluster to join (--engine ray)")
    bulk.add_argument("--shard-size", type=int, help=f"rows per shard (default {DEFAULT_SHARD_SIZE})")
    bulk.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per model replica (local: 0 for the CPU, 0.5 for two replicas per GPU; default: one per GPU)",
    )
    stored = parser.add_argument_group("stored precision (--output FILE)")
    stored.add_argument(
        "--precision",
        choices=[precision.value for precision in Precision],
        default=Precision.FLOAT32.value,
        help="what the rows are stored as (default %(default)s)",
    )
    stored.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="int8/uint8 ranges: OUT.calibration.npz (or .json) of an earlier run, or a .npy of calibration "
        "embeddings (default: this run's embeddings)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if is_folder_output(args.output):
        return _run_sharded(args)
    return _run_file(args)


def _run_sharded(args: argparse.Namespace) -> int:
    """Every SOURCE into a folder of shards (resumable)."""
    from unite.bulk.run import run_bulk

    for flag, given in (
        ("--precision", args.precision != Precision.FLOAT32.value),
        ("--calibration", args.calibration is not None),
        ("--errors", args.errors is not None),
    ):
        if given:
            raise ConfigError(f"{flag} applies to an --output file, not to a folder of shards ({args.output})")
    if args.ray_address is not None and args.engine != "ray":
        raise ConfigError("--ray-address only applies with --engine ray")
    job = BulkJob(
        model=args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        packing=args.packing,
        setting_overrides=setting_overrides(args),
        instruction=args.instruction,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        on_error=args.on_error,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        engine=args.engine or "local",
        ray_address=args.ray_address,
    )
    shard_size = DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size
    summary = run_bulk(args.sources, args.output, job, shard_size=shard_size, show_progress=not args.no_progress)
    sys.stderr.write(_bulk_summary(summary))
    return 0


def _bulk_summary(summary: BulkSummary) -> str:
    rate = summary.items / summary.seconds if summary.seconds > 0 else 0.0
    text = (
        f"unite: encoded {summary.items} items ({summary.items_failed} failed) in {summary.seconds:.1f} s, "
        f"{rate:.1f} items/s; {summary.output}: {summary.shards} shards ({summary.reused} already complete, "
        f"{summary.written} written), {summary.ok} of {summary.rows} rows embedded, {summary.failed} failed\n"
    )
    if summary.workers and summary.seconds > 0:
        each = ", ".join(f"{w.name} {w.items / summary.seconds:.1f}" for w in summary.workers)
        text += f"unite: items/s per worker: {each}\n"
    return text


def _run_file(args: argparse.Namespace) -> int:
    """One ITEMS.jsonl into one embeddings file (the behaviour before shards)."""
    for flag, given in (
        ("--engine", args.engine),
        ("--ray-address", args.ray_address),
        ("--shard-size", args.shard_size),
        ("--gpus-per-worker", args.gpus_per_worker),
    ):
        if given is not None:
            raise ConfigError(f"{flag} applies to a folder of shards (--output OUT_DIR/), not to {args.output}")
    if "://" in args.output:
        raise ConfigError(f"--output {args.output}: a URI must name a folder of shards, ending with /")
    if len(args.sources) != 1:
        raise ConfigError(
            f"--output {args.output} takes one ITEMS.jsonl, got {len(args.sources)} sources; several sources "
            "need a folder of shards (--output OUT_DIR/)"
        )
    args.items, args.output = Path(args.sources[0]), Path(args.output)
    if args.items.suffix.lower() == ".parquet":
        raise ConfigError(f"{args.items}: a Parquet source needs a folder of shards (--output OUT_DIR/)")
    if args.output.suffix not in FORMATS:
        raise ConfigError(f"--output must end with {' or '.join(FORMATS)}, got {args.output}")
    if args.errors is not None and args.on_error == "raise":
        raise ConfigError("--errors only applies with --on-error skip")
    precision = Precision.parse(args.precision)
    if args.calibration is not None and not precision.uses_ranges:
        raise ConfigError(f"--calibration only applies with --precision int8 or uint8, got {precision.value}")
    calibration = Calibration.load(args.calibration) if args.calibration is not None else None
    records = read_item_lines(args.items)
    if args.on_error == "raise":
        bad = next((record for record in records if record.error is not None), None)
        if bad is not None:
            raise bad.error
    embeddings, ok, failures = _encode_lines(args, records)
    rows, calibration = _quantize(embeddings, ok, precision, calibration, args.calibration)
    ids = [record.id for record in records]
    written = write_embeddings(
        args.output,
        rows,
        ok=ok if args.on_error == "skip" else None,
        ids=ids if any(value is not None for value in ids) else None,
        lines=[record.line for record in records],
        precision=precision.value,
    )
    summary = f"unite: encoded {int(ok.sum())} of {len(records)} items into {written[0]}"
    if precision is not Precision.FLOAT32:
        summary += f" as {precision.value}"
    if calibration is not None:
        summary += f" (ranges in {calibration.save(calibration_path(args.output))})"
    if args.on_error == "skip":
        errors_path = args.errors or args.output.with_name(args.output.stem + ".errors.jsonl")
        text = "".join(json.dumps({"line": line, "error": message}) + "\n" for line, message in failures)
        write_atomically(errors_path, lambda handle: handle.write(text.encode("utf-8")))
        summary += f" (row mask {mask_path(args.output).name if args.output.suffix == '.npy' else 'in column ok'}"
        summary += f"; {len(failures)} failed, listed in {errors_path})"
    sys.stderr.write(summary + "\n")
    return 0


def _quantize(
    embeddings: np.ndarray, ok: np.ndarray, precision: Precision, calibration: Calibration | None, source: Path | None
) -> tuple[np.ndarray, Calibration | None]:
    """The rows in ``precision`` (failed rows zero) and the int8/uint8 ranges used (``source``: their file)."""
    if calibration is not None and calibration.dim != embeddings.shape[1]:
        raise ConfigError(
            f"--calibration {source}: ranges for {calibration.dim} dimensions, the model gives {embeddings.shape[1]}"
        )
    if precision.uses_ranges and calibration is None and int(ok.sum()) == 1:
        raise ConfigError(
            f"--precision {precision.value}: ranges need at least 2 embedded lines, got 1; pass --calibration FILE "
            "(OUT.calibration.npz of an earlier run, or a .npy of calibration embeddings)"
        )
    return quantize_rows(embeddings, ok, precision, calibration)


def _encode_lines(args: argparse.Namespace, records: list[JsonlRecord]) -> tuple[np.ndarray, np.ndarray, list]:
    """Embed the parsed lines; returns one row per line (N, D), the (N,) mask and (line, error) of every failure.

    Raises:
        UniteError: under ``--on-error raise``, the first item that fails, named ``ITEMS.jsonl:LINE: reason``.
    """
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
    embeddings = np.zeros((len(records), encoder.embedding_dim), dtype=np.float32)
    ok = np.zeros(len(records), dtype=bool)
    embeddings[rows] = result.embeddings
    ok[rows] = result.ok
    failures = [(record.line, str(record.error)) for record in records if record.error is not None]
    failures += [(valid[i].line, f"{args.items}:{valid[i].line}: {message}") for i, message in result.errors]
    return embeddings, ok, sorted(failures)
