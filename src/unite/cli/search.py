"""``unite search``: query an index with any mix of text, an image and a video."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from unite.errors import ConfigError, InputError
from unite.index.storage import location_arg

__all__ = ["add_parser", "encoder_for_index", "format_table", "model_for_index"]

logger = logging.getLogger(__name__)

EPILOG = """\
The query is encoded with the model and encoding settings recorded in the index, so it lands in the same space
as the corpus. The index also records a fingerprint of the model's weights: weights that changed since the build
are refused. When the model folder has moved, --model NEW_PATH points at it (same weights, same fingerprint).
--modality keeps only entries of that modality (inside the database): text, image, video, or a combination such
as text,image for fused entries. Paths are shown relative to the indexed folder; --absolute-paths shows where the
files are on this machine.

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
    parser.add_argument("--index", required=True, type=location_arg, help="index folder or URI")
    parser.add_argument("--image", help="query image file")
    parser.add_argument("--video", help="query video file")
    parser.add_argument("--modality", help="keep only this target modality: text, image, video or e.g. text,image")
    parser.add_argument("-k", type=int, default=10, help="number of results (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--exact", action="store_true", help="exact search, bypassing the approximate index")
    parser.add_argument(
        "--model", help="the index's model at another place (a moved folder; its weights must match the index's)"
    )
    parser.add_argument(
        "--absolute-paths", action="store_true", help="show files as absolute paths on this machine (trusted use)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, else fp32")
    parser.set_defaults(run=run)


def encoder_for_index(
    manifest: Any, model: str | None = None, device: str | None = None, dtype: str | None = None, **overrides: Any
) -> Any:
    """Load the model an index was built with, with the encoding settings it recorded.

    Args:
        manifest: the index's :class:`unite.index.IndexManifest`.
        model: where the model is now (a moved folder); default: the one the index records.
        device, dtype: as for :meth:`UniteEncoder.from_pretrained`.
        **overrides: encoding settings to change (e.g. ``allow_remote``).

    Raises:
        ConfigError: the recorded model folder is gone, or the weights differ from those the index was built
            with (by :func:`unite.models.loading.weights_fingerprint`). An index that records no fingerprint
            (built by an older unite-embed) is loaded with a warning.
    """
    from unite.models.encoder import UniteEncoder
    from unite.settings import EncodingSettings

    name = model_for_index(manifest, model)
    if manifest.model_fingerprint is None:
        logger.warning(
            "the index records no weights fingerprint (built by an older unite-embed): cannot check that %s holds "
            "the weights it was built with; rebuild the index to record them",
            name,
        )
    elif Path(name).is_dir() and (local := _local_fingerprint(name)) is not None:
        check_weights(manifest, local, name)  # before the (slow) load when the model is local
    settings = EncodingSettings.from_dict(manifest.settings).replace(**overrides)
    encoder = UniteEncoder.from_pretrained(name, device=device, dtype=dtype, settings=settings)
    if manifest.model_fingerprint is not None:
        check_weights(manifest, getattr(encoder, "weights_fingerprint", None), name)
    return encoder


def _local_fingerprint(folder: str) -> str | None:
    """The fingerprint of a local folder, or None when it cannot be taken before loading (an adapter whose base is
    not downloaded yet: the check then runs after loading)."""
    from unite.errors import CheckpointError
    from unite.models.loading import weights_fingerprint

    try:
        return weights_fingerprint(folder)
    except CheckpointError:
        return None


def model_for_index(manifest: Any, model: str | None = None) -> str:
    """The model to load for an index: ``model`` (a local folder made absolute), else the recorded one.

    Raises:
        ConfigError: no ``model`` is given and the recorded local folder is gone.
    """
    if model:
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else model
    recorded = manifest.model
    if Path(recorded).expanduser().is_absolute() and not Path(recorded).expanduser().is_dir():
        raise ConfigError(
            f"the model folder {recorded} recorded in the index is gone; if it moved, pass --model NEW_PATH "
            "(a folder holding the same weights)"
        )
    return recorded


def check_weights(manifest: Any, fingerprint: str | None, where: str) -> None:
    """Refuse weights whose fingerprint differs from the one the index recorded.

    Raises:
        ConfigError: naming the folder and both fingerprints.
    """
    if manifest.model_fingerprint and fingerprint != manifest.model_fingerprint:
        raise ConfigError(
            f"the weights at {where} differ from those the index was built with (fingerprint "
            f"{str(fingerprint)[:12]} != {manifest.model_fingerprint[:12]}); rebuild the index or pass --model "
            "with the original weights"
        )


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
    encoder = encoder_for_index(manifest, model=args.model, device=args.device, dtype=args.dtype)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    vector = encoder.encode([item], show_progress_bar=False)[0]
    hits = store.search(vector, k=args.k, modality=modality, exact=args.exact)
    store.close()
    results = [shown_hit(hit, args.absolute_paths) for hit in hits]
    if args.json:
        payload = {"model": manifest.model, "results": results}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(results) + "\n")
    return 0


def shown_hit(hit: Any, absolute_paths: bool = False) -> dict[str, Any]:
    """A hit's public fields; with ``absolute_paths`` its file as an absolute path on this machine."""
    shown = hit.to_dict()
    if absolute_paths and hit.path:
        shown["path"] = str(Path(hit.root) / hit.path) if hit.root else hit.path
    return shown


def time_range(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    return f"{_clock(start)}-{_clock(end or start)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def format_table(hits: list[Any], width: int = 60) -> str:
    """Hits (or their public dicts) as a plain-text table: rank, score, modality, id, time range, text or path."""
    if not hits:
        return "no results"
    rows = [("#", "score", "modality", "id", "time", "text / path")]
    for rank, hit in enumerate(hits, start=1):
        hit = hit if isinstance(hit, dict) else hit.to_dict()
        shown = " ".join(hit["text"].split()) or hit["path"]
        if len(shown) > width:
            shown = shown[: width - 3] + "..."
        span = time_range(hit["start"], hit["end"])
        rows.append((str(rank), f"{hit['score']:.4f}", hit["modality"], hit["id"], span, shown))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
