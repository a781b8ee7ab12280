"""``unite search``: query an index with any mix of text, an image and a video."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from unite.errors import InputError

__all__ = ["add_parser", "encoder_for_index", "format_table"]

EPILOG = """\
The query is encoded with the model and encoding settings recorded in the index, so it lands in the same space
as the corpus. --modality keeps only entries of that modality (inside the database): text, image, video, or a
combination such as text,image for fused entries.

examples:
  unite search --index photos.index "a cat asleep on a sofa"
  unite search --index photos.index --image query.jpg --modality image -k 5
  unite search --index videos.index "a goal in the last minute" --modality video --json
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "search",
        help="search an index with text, an image, a video or a mix",
        description="Search an index built by `unite index build`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="query text")
    parser.add_argument("--index", required=True, type=Path, help="index folder")
    parser.add_argument("--image", help="query image file")
    parser.add_argument("--video", help="query video file")
    parser.add_argument("--modality", help="keep only this target modality: text, image, video or e.g. text,image")
    parser.add_argument("-k", type=int, default=10, help="number of results (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--exact", action="store_true", help="exact search, bypassing the approximate index")
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, else fp32")
    parser.set_defaults(run=run)


def encoder_for_index(manifest: Any, device: str | None = None, dtype: str | None = None, **overrides: Any) -> Any:
    """Load the model an index was built with, with the encoding settings it recorded."""
    from unite.models.encoder import UniteEncoder
    from unite.settings import EncodingSettings

    settings = EncodingSettings.from_dict(manifest.settings).replace(**overrides)
    return UniteEncoder.from_pretrained(manifest.model, device=device, dtype=dtype, settings=settings)


def query_item(text: str | None, image: Any = None, video: Any = None) -> Any:
    """The query as an item; at least one part is needed."""
    from unite.types import Item

    if not (text and text.strip()) and image is None and video is None:
        raise InputError("give a query: TEXT, --image or --video (or a mix)")
    return Item(text=text or None, images=(image,) if image is not None else (), videos=(video,) if video else ())


def run(args: argparse.Namespace) -> int:
    from unite.index import open_store, read_manifest
    from unite.types import Modality

    if args.k < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    modality = int(Modality.parse(args.modality)) if args.modality else None
    item = query_item(args.text, args.image, args.video)
    manifest = read_manifest(args.index)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    encoder = encoder_for_index(manifest, device=args.device, dtype=args.dtype)
    vector = encoder.encode([item], show_progress_bar=False)[0]
    hits = store.search(vector, k=args.k, modality=modality, exact=args.exact)
    store.close()
    if args.json:
        payload = {"model": manifest.model, "results": [hit.to_dict() for hit in hits]}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(hits) + "\n")
    return 0


def time_range(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    return f"{_clock(start)}-{_clock(end or start)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def format_table(hits: list[Any], width: int = 60) -> str:
    """Hits as a plain-text table: rank, score, modality, id, time range, text or path."""
    if not hits:
        return "no results"
    rows = [("#", "score", "modality", "id", "time", "text / path")]
    for rank, hit in enumerate(hits, start=1):
        shown = " ".join(hit.text.split()) or hit.path
        if len(shown) > width:
            shown = shown[: width - 3] + "..."
        rows.append((str(rank), f"{hit.score:.4f}", hit.modality, hit.id, time_range(hit.start, hit.end), shown))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
