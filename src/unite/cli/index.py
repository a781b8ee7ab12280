"""``unite index build`` / ``unite index info``: a durable, incremental multimodal index."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from unite.cli.options import add_model_options, encoder_from_args
from unite.errors import ConfigError

__all__ = ["add_parser"]

EPILOG = """\
SOURCE is a folder (images, videos, .txt/.md files, walked recursively; hidden files skipped) or a JSONL file
with one item per line: {"id": ..., "text": ..., "image": path, "video": path, "metadata": {...}}.

A rerun encodes only new or changed entries (by content hash); --sync also removes the entries of deleted files.
An interrupted build keeps every committed batch and resumes when rerun.

examples:
  unite index build ~/photos --index photos.index --model friedrichor/Unite-Base-Qwen2-VL-2B
  unite index build ~/videos --index videos.index --model ... --clip-seconds 10 --sync
  unite index build items.jsonl --index items.index --model ... --backend qdrant --qdrant-url http://host:6333
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "index",
        help="build or inspect a search index of photos, clips and texts",
        description="Build or inspect a durable multimodal search index.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="index a folder or a JSONL file of items (incremental)",
        description="Embed a folder or JSONL file into an index; reruns encode only what changed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("source", metavar="SOURCE", type=Path, help="folder or .jsonl file")
    build.add_argument("--index", required=True, type=Path, help="index folder (created if absent)")
    add_model_options(build)
    store = build.add_argument_group("store")
    store.add_argument("--backend", choices=["lancedb", "qdrant"], default="lancedb", help="default: lancedb")
    store.add_argument("--qdrant-url", help="Qdrant server URL; without it Qdrant runs embedded in the index folder")
    store.add_argument("--collection", default="unite", help="Qdrant collection name (default %(default)s)")
    store.add_argument(
        "--ann-threshold",
        type=int,
        help="rows from which LanceDB builds an approximate index (default 50000)",
    )
    run_group = build.add_argument_group("run")
    run_group.add_argument("--sync", action="store_true", help="remove the entries of files that no longer exist")
    run_group.add_argument("--clip-seconds", type=float, help="cut videos longer than this into clips of this length")
    run_group.add_argument("--batch-size", type=int, default=16, help="most items per model batch (default 16)")
    run_group.add_argument(
        "--commit-every", type=int, default=64, help="entries per committed batch (default %(default)s)"
    )
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(run=run_build)

    info = actions.add_parser("info", help="show an index's model, settings and size")
    info.add_argument("--index", required=True, type=Path, help="index folder")
    info.set_defaults(run=run_info)


def _model_name(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from unite.index import DEFAULT_ANN_THRESHOLD, IndexManifest, build_index, create_store, scan_source

    if args.clip_seconds is not None and args.clip_seconds <= 0:
        raise ConfigError(f"--clip-seconds must be positive, got {args.clip_seconds}")
    if args.commit_every < 1 or args.batch_size < 1:
        raise ConfigError("--commit-every and --batch-size must be at least 1")
    if args.qdrant_url and args.backend != "qdrant":
        raise ConfigError("--qdrant-url needs --backend qdrant")
    encoder = encoder_from_args(args)
    manifest = IndexManifest(
        backend=args.backend,
        model=_model_name(args.model),
        settings=encoder.settings.to_dict(),
        dim=encoder.embedding_dim,
        ann_threshold=args.ann_threshold or DEFAULT_ANN_THRESHOLD,
        url=args.qdrant_url,
        collection=args.collection,
    )
    store = create_store(args.index, manifest, api_key=os.environ.get("QDRANT_API_KEY"))
    entries = scan_source(args.source, clip_seconds=args.clip_seconds, settings=encoder.settings, skip=args.index)

    def embed(items: list) -> object:
        return encoder.encode_with_errors(items, batch_size=args.batch_size, show_progress_bar=False)

    with tqdm(total=len(entries), disable=args.no_progress, desc="Indexing", unit="item") as bar:
        bar.update(0)
        report = build_index(
            store,
            entries,
            embed,
            settings=encoder.settings,
            sync=args.sync,
            commit_every=args.commit_every,
            progress=bar.update,
        )
    store.close()
    for record_id, reason in report.failed:
        sys.stderr.write(f"unite: skipped {record_id}: {reason}\n")
    sys.stdout.write(f"{args.index}: {report.summary()}\n")
    return 1 if report.failed and not report.encoded and not report.unchanged else 0


def run_info(args: argparse.Namespace) -> int:
    from unite.index import open_store, read_manifest

    manifest = read_manifest(args.index)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    info = {"index": str(args.index), "backend": manifest.backend, "model": manifest.model, "dim": manifest.dim}
    info.update({"items": store.count(), "url": manifest.url, "settings": manifest.settings})
    store.close()
    sys.stdout.write(json.dumps(info, indent=2) + "\n")
    return 0
