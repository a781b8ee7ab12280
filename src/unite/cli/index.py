"""``unite index build|info|stats|remove``: a durable, incremental multimodal index."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from unite.cli.options import add_model_options, encoder_from_args, setting_overrides
from unite.errors import ConfigError
from unite.index.storage import location_arg

__all__ = ["add_parser"]

EPILOG = """\
SOURCE is a folder (images, videos, .txt/.md files, walked recursively; hidden files skipped) or a JSONL file
with one item per line: {"id": ..., "text": ..., "image": path, "video": path, "metadata": {...}}.

A folder walk stays inside the folder: links whose real path lies outside it are skipped (and counted in the
summary), each real file or folder is indexed once, under the first path the walk meets (names sorted, depth
first), and loops end. Records keep paths relative to the folder.

A rerun encodes only new or changed entries (by content hash); --sync also removes the entries of deleted files.
An interrupted build keeps every committed batch and resumes when rerun. A rerun reuses the model, encoding
settings, backend, Qdrant URL and collection the index records; --model is needed only for a new index or when
the model folder has moved (its weights must match the index's fingerprint).

--vector-precision int8 or binary also stores quantised vectors for a first-stage search over rescore-factor x k
candidates, ranked again with the float32 vectors (also stored): int8 by dot products of int8 codes (ranges per
dimension from --calibration, else the min and max of the corpus, recorded at the end of the first build), binary by
the float32 query against the sign bits, q . (2 * bits - 1) (kept in memory: N x D / 8 bytes). The default
binary --rescore-factor 20 comes within 2 points of float32's recall@10 on all but the hardest synthetic set,
where it takes 50 (docs/search.md).
That is the LanceDB backend; Qdrant uses its own scalar (int8) or binary quantisation with rescoring on a server,
and stores float32 only in embedded mode.

--from-embeddings OUT_DIR takes the vectors of `unite encode SOURCE... --output OUT_DIR/` instead of a model: the
index records the shards' model, settings and weights fingerprint (an index made with others refuses them), each
ok row is indexed as a direct build of its source line would index it (same id, content hash, text, metadata and
relative media path, re-read from the source), rows without an id get the id NAME:LINE (file name, 1-based line
or Parquet row), failed rows are reported. Incomplete shards, shards whose sha256 differs from the manifest's and
sources changed since they were encoded are refused. --index and --from-embeddings may be URIs (file://, s3://,
gs://), opened through LanceDB and pyarrow's filesystems.

examples:
  unite index build ~/photos --index photos.index --model friedrichor/Unite-Base-Qwen2-VL-2B
  unite index build ~/photos --index photos-int8.index --model ... --vector-precision int8
  unite index build ~/photos --index photos.index --sync
  unite index build ~/videos --index videos.index --model ... --clip-seconds 10 --sync
  unite index build items.jsonl --index items.index --model ... --backend qdrant --qdrant-url http://host:6333
  unite index build --from-embeddings vectors/ --index s3://bucket/items.index
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
        help="index a folder, a JSONL file of items or embedding shards (incremental)",
        description="Embed a folder or JSONL file into an index, or index the shards of `unite encode --output "
        "OUT_DIR/` without the model; reruns write only what changed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("source", metavar="SOURCE", type=Path, nargs="?", help="folder or .jsonl file")
    build.add_argument(
        "--from-embeddings",
        metavar="OUT_DIR",
        type=location_arg,
        help="instead of SOURCE: the shards of `unite encode ... --output OUT_DIR/` (a folder or a URI), indexed "
        "without the model",
    )
    build.add_argument(
        "--index", required=True, type=location_arg, help="index folder or URI, e.g. s3://bucket/ix (created if absent)"
    )
    add_model_options(
        build,
        model_required=False,
        model_help="checkpoint folder or Hugging Face id (owner/name); needed for a new index, else default: the "
        "model the index records",
    )
    store = build.add_argument_group("store (default for a rerun: what the index records)")
    store.add_argument("--backend", choices=["lancedb", "qdrant"], help="default for a new index: lancedb")
    store.add_argument("--qdrant-url", help="Qdrant server URL; without it Qdrant runs embedded in the index folder")
    store.add_argument("--collection", help="Qdrant collection name (default for a new index: unite)")
    store.add_argument(
        "--ann-threshold",
        type=int,
        help="rows from which LanceDB builds an approximate index (default 50000)",
    )
    _add_precision_options(build.add_argument_group("quantised vectors (default for a rerun: what the index records)"))
    run_group = build.add_argument_group("run")
    run_group.add_argument("--sync", action="store_true", help="remove the entries of files that no longer exist")
    run_group.add_argument("--clip-seconds", type=float, help="cut videos longer than this into clips of this length")
    run_group.add_argument("--batch-size", type=int, default=16, help="most items per model batch (default 16)")
    run_group.add_argument(
        "--commit-every", type=int, default=64, help="entries per committed batch (default %(default)s)"
    )
    run_group.add_argument(
        "--on-error",
        choices=["skip", "raise"],
        default="skip",
        help="a bad JSONL line: skip it and report it (default; its old entry, if any, is kept) or stop the build",
    )
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(run=run_build)

    info = actions.add_parser("info", help="show an index's model, settings and size")
    info.add_argument("--index", required=True, type=location_arg, help="index folder or URI")
    info.set_defaults(run=run_info)

    stats = actions.add_parser(
        "stats",
        help="items per modality, size on disk, version, model and its weights fingerprint",
        description="Show what an index holds: items per modality, total, size on disk, table version (LanceDB), "
        "backend, model and the fingerprint of the weights it was built with.",
    )
    stats.add_argument("--index", required=True, type=location_arg, help="index folder or URI")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=run_stats)

    remove = actions.add_parser(
        "remove",
        help="remove entries by id",
        description="Remove entries by id (one commit). Exits 1 when none of the ids is in the index. A later "
        "build adds an entry back if its file is still in the source.",
    )
    remove.add_argument("--index", required=True, type=location_arg, help="index folder or URI")
    remove.add_argument("ids", nargs="+", metavar="ID", help="entry ids, as search shows them")
    remove.set_defaults(run=run_remove)


def _add_precision_options(group: argparse._ArgumentGroup) -> None:
    from unite.index.quantized import DEFAULT_RESCORE_FACTORS, VECTOR_PRECISIONS

    group.add_argument(
        "--vector-precision", choices=VECTOR_PRECISIONS,
        help="first-stage vectors: float32 (default for a new index), int8 or binary (float32 also kept, to rescore)",
    )
    group.add_argument(
        "--rescore-factor", type=int, metavar="N",
        help=f"first-stage candidates per result (default: int8 {DEFAULT_RESCORE_FACTORS['int8']}, binary "
        f"{DEFAULT_RESCORE_FACTORS['binary']})",
    )
    group.add_argument(
        "--calibration", type=Path, metavar="FILE",
        help="int8 ranges: a .npz/.json from unite encode --precision int8, or a .npy of calibration embeddings "
        "(default: the corpus's own min and max per dimension)",
    )


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from unite.index import build_index, create_store, scan_source
    from unite.index.sources import check_source
    from unite.index.storage import local_path

    _check_build_args(args)
    if args.from_embeddings is not None:
        return run_ingest(args)
    check_source(args.source)  # before anything is loaded or created
    existing = _existing_manifest(args.index)
    calibration = _check_precision_args(args, existing)
    encoder = _load_encoder(args, existing)
    manifest = _build_manifest(
        args,
        existing,
        (args.model, encoder.settings.to_dict(), encoder.embedding_dim, getattr(encoder, "weights_fingerprint", None)),
        calibration,
    )
    entries = scan_source(
        args.source,
        clip_seconds=args.clip_seconds,
        settings=encoder.settings,
        skip=local_path(args.index),
        on_error=args.on_error,
    )
    store = create_store(args.index, manifest, api_key=os.environ.get("QDRANT_API_KEY"))

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
    return _report(args, report)


def run_ingest(args: argparse.Namespace) -> int:
    """``--from-embeddings OUT_DIR``: the shards' vectors into the index, with the model and settings they record."""
    from tqdm import tqdm

    from unite.index import create_store
    from unite.index.build import ingest_vectors
    from unite.index.shards import ShardVectors, read_shards, scan_shards
    from unite.index.store import check_same_encoding

    shards = read_shards(args.from_embeddings)  # refuses incomplete shards before anything is created
    existing = _existing_manifest(args.index)
    calibration = _check_precision_args(args, existing)
    same_weights = existing is not None and existing.model_fingerprint == shards.model_fingerprint
    model = existing.model if same_weights and shards.model_fingerprint else shards.model  # the one found here
    encoding = (model, shards.settings, shards.dim, shards.model_fingerprint)
    manifest = _build_manifest(args, existing, encoding, calibration)
    if existing is not None:
        check_same_encoding(args.index, existing, manifest)  # before the shards are read
    entries = scan_shards(shards, on_error=args.on_error)
    store = create_store(args.index, manifest, api_key=os.environ.get("QDRANT_API_KEY"))
    with tqdm(total=len(entries), disable=args.no_progress, desc="Indexing", unit="item") as bar:
        bar.update(0)
        report = ingest_vectors(
            store,
            entries,
            ShardVectors(shards, entries.positions),
            sync=args.sync,
            commit_every=args.commit_every,
            progress=bar.update,
        )
    store.close()
    return _report(args, report)


def _report(args: argparse.Namespace, report: Any) -> int:
    for record_id, reason in report.failed:
        sys.stderr.write(f"unite: skipped {record_id}: {reason}\n")
    sys.stdout.write(f"{args.index}: {report.summary()}\n")
    return 1 if report.failed and not report.encoded and not report.unchanged else 0


#: Options of a build that encodes, which the shards' manifest decides for --from-embeddings.
_ENCODING_OPTIONS = ("model", "revision", "device", "dtype", "clip_seconds")


def _check_build_args(args: argparse.Namespace) -> None:
    if (args.source is None) == (args.from_embeddings is None):
        raise ConfigError("give either SOURCE (a folder or .jsonl file) or --from-embeddings OUT_DIR")
    if args.from_embeddings is not None:
        given = [name for name in _ENCODING_OPTIONS if getattr(args, name) is not None] + list(setting_overrides(args))
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(
                f"--from-embeddings takes the model and encoding settings from the shards' manifest; drop {flags}"
            )
    if args.clip_seconds is not None and args.clip_seconds <= 0:
        raise ConfigError(f"--clip-seconds must be positive, got {args.clip_seconds}")
    if args.commit_every < 1 or args.batch_size < 1:
        raise ConfigError("--commit-every and --batch-size must be at least 1")
    if args.qdrant_url and args.backend not in (None, "qdrant"):
        raise ConfigError("--qdrant-url needs --backend qdrant")


def _check_precision_args(args: argparse.Namespace, existing: Any) -> Any:
    """The --calibration ranges (or None), after checking the precision flags agree with each other."""
    from unite.quantization import Calibration

    precision = args.vector_precision or (existing.vector_precision if existing else "float32")
    if args.rescore_factor is not None and args.rescore_factor < 1:
        raise ConfigError(f"--rescore-factor must be at least 1, got {args.rescore_factor}")
    if args.rescore_factor is not None and precision == "float32":
        raise ConfigError("--rescore-factor needs --vector-precision int8 or binary")
    if args.calibration is not None and precision != "int8":
        raise ConfigError(f"--calibration needs --vector-precision int8, got {precision}")
    return Calibration.load(args.calibration) if args.calibration is not None else None


def _existing_manifest(index: Any) -> Any:
    from unite.index import read_manifest
    from unite.index.storage import exists
    from unite.index.store import MANIFEST_FILE

    return read_manifest(index) if exists(index, MANIFEST_FILE) else None


def _load_encoder(args: argparse.Namespace, existing: Any) -> Any:
    """The build's encoder: ``--model``, else the index's model; a rerun starts from the index's settings."""
    from unite.cli.search import model_for_index
    from unite.index.store import MANIFEST_FILE
    from unite.settings import EncodingSettings

    if existing is None and not args.model:
        raise ConfigError(f"--model is required to build a new index ({args.index} holds no {MANIFEST_FILE} yet)")
    args.model = model_for_index(existing, args.model)
    return encoder_from_args(args, EncodingSettings.from_dict(existing.settings) if existing else None)


def _build_manifest(
    args: argparse.Namespace, existing: Any, encoding: tuple[str, dict, int, str | None], calibration: Any = None
) -> Any:
    """The manifest of this build: the arguments given, else what the index records, else the defaults.

    ``encoding`` is ``(model, settings dict, embedding size, weights fingerprint)`` of the encoder or the shards.
    """
    from unite.index import DEFAULT_ANN_THRESHOLD, IndexManifest

    model, settings, dim, fingerprint = encoding
    if calibration is not None and calibration.dim != dim:
        raise ConfigError(
            f"--calibration {args.calibration}: ranges for {calibration.dim} dimensions, the model gives {dim}"
        )

    backend = args.backend or (existing.backend if existing else "lancedb")
    same = existing is not None and existing.backend == backend
    url = args.qdrant_url or (existing.url if same else None)
    if url and backend != "qdrant":
        raise ConfigError("--qdrant-url needs --backend qdrant")
    return IndexManifest(
        backend=backend,
        model=model,
        settings=settings,
        dim=dim,
        ann_threshold=args.ann_threshold or (existing.ann_threshold if existing else DEFAULT_ANN_THRESHOLD),
        url=url,
        collection=args.collection or (existing.collection if same else "unite"),
        model_fingerprint=fingerprint,
        vector_precision=args.vector_precision or (existing.vector_precision if existing else "float32"),
        calibration=calibration.to_dict() if calibration is not None else None,
        rescore_factor=args.rescore_factor or (existing.rescore_factor if existing else None),
    )


def run_info(args: argparse.Namespace) -> int:
    from unite.index import open_store, read_manifest

    manifest = read_manifest(args.index)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    info = {"index": str(args.index), "backend": manifest.backend, "model": manifest.model, "dim": manifest.dim}
    info.update({"items": store.count(), "url": manifest.url, "settings": manifest.settings})
    info.update({"model_fingerprint": manifest.model_fingerprint, "format": manifest.format})
    info.update({"vector_precision": manifest.vector_precision, "rescore_factor": manifest.rescore_factor})
    store.close()
    sys.stdout.write(json.dumps(info, indent=2) + "\n")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from unite.index import open_store, read_manifest

    manifest = read_manifest(args.index)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    stats = store.stats()
    store.close()
    info = {"index": str(args.index), "backend": manifest.backend, "url": manifest.url, "model": manifest.model}
    info.update({"model_fingerprint": manifest.model_fingerprint, "vector_precision": manifest.vector_precision})
    info.update(stats)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    items = ", ".join(f"{name} {count}" for name, count in sorted(stats["items"].items()))
    size = "unknown (on the Qdrant server)" if stats["bytes"] is None else _size(stats["bytes"])
    lines = [
        f"index: {args.index}",
        f"backend: {manifest.backend}" + (f" at {manifest.url}" if manifest.url else ""),
        f"model: {manifest.model}",
        f"model fingerprint: {manifest.model_fingerprint or 'not recorded (built by an older unite-embed)'}",
        f"items: {stats['total']}" + (f" ({items})" if items else ""),
        f"size on disk: {size}",
        f"version: {'-' if stats['version'] is None else stats['version']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _size(size: int) -> str:
    """``1536`` -> ``1.5 KiB (1536 bytes)``."""
    value, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"


def run_remove(args: argparse.Namespace) -> int:
    from unite.index import open_store

    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    ids = list(dict.fromkeys(args.ids))
    found = [record_id for record_id in ids if store.get(record_id) is not None]
    store.delete(found)
    store.close()
    unknown = [record_id for record_id in ids if record_id not in found]
    line = f"{args.index}: removed {len(found)} of {len(ids)} ids"
    sys.stdout.write(line + (f"; not found: {', '.join(unknown)}" if unknown else "") + "\n")
    return 0 if found else 1
