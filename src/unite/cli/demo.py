"""``unite demo``: index a small bundled corpus (public-domain photos, generated clips, notes) and search it."""

from __future__ import annotations

import argparse
import base64
import html
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from unite.errors import CheckpointError, ConfigError

__all__ = ["DEFAULT_MODEL", "add_parser", "run"]

DEFAULT_MODEL = "friedrichor/Unite-Base-Qwen2-VL-2B"
#: Videos longer than this are indexed as clips with time ranges.
CLIP_SECONDS = 2.0
NOTES = {
    "cat.txt": "Chelsea the tabby cat likes to sleep in the sun on the windowsill.",
    "space.txt": "The Space Shuttle carried astronauts into orbit from 1981 to 2011.",
    "coffee.txt": "A latte with milk foam art, served in a white cup on a wooden table.",
}
#: (label, query item, target modality or None)
QUERIES: list[tuple[str, dict[str, Any], str | None]] = [
    ("an astronaut in a spacesuit", {"text": "an astronaut in a spacesuit"}, None),
    ("a cup of coffee", {"text": "a cup of coffee"}, None),
    ("a rocket on the launch pad", {"text": "a rocket on the launch pad"}, "image"),
    ("a red ball rolling from left to right", {"text": "a red ball rolling from left to right"}, "video"),
    ("the traffic light turns green", {"text": "the traffic light turns green"}, "video"),
    ("[image] cat.jpg -> texts", {"image": "photos/cat.jpg"}, "text"),
]
RESULTS_PER_QUERY = 3


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="index a small example corpus (photos, clips, notes), search it, write an HTML page of results",
        description=(
            "Write a small example corpus (public-domain photos bundled with unite, generated clips, short notes), "
            "index it with a UNITE checkpoint, run a few searches, print the results and write results.html with "
            "thumbnails. When the Hugging Face Hub cannot be reached, a tiny random checkpoint is used instead and "
            "the results are labelled meaningless."
        ),
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default %(default)s)")
    parser.add_argument("--offline", action="store_true", help="skip the Hub and use a tiny random checkpoint")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("demo_output"), help="corpus, index and page (default %(default)s)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unite.index import IndexManifest, build_index, create_store, scan_folder

    folder = args.output_dir
    corpus = write_corpus(folder / "corpus")
    encoder, meaningless = _load(args, folder)
    manifest = IndexManifest("lancedb", str(encoder.name_or_path), encoder.settings.to_dict(), encoder.embedding_dim)
    index_dir = folder / "index"
    try:
        store = create_store(index_dir, manifest)
    except ConfigError:  # the demo's own index, built earlier with another model: start afresh
        shutil.rmtree(index_dir)
        store = create_store(index_dir, manifest)
    entries = scan_folder(corpus, clip_seconds=CLIP_SECONDS, settings=encoder.settings)
    report = build_index(
        store, entries, lambda items: encoder.encode_with_errors(items, batch_size=8, show_progress_bar=False)
    )
    results = []
    for label, query, target in QUERIES:
        item = {key: str(corpus / value) if key != "text" else value for key, value in query.items()}
        vector = encoder.encode([item], show_progress_bar=False)[0]
        results.append((label, target, store.search(vector, k=RESULTS_PER_QUERY, modality=target)))
    page = folder / "results.html"
    write_page(page, results, encoder, meaningless)
    _print(sys.stdout, results, encoder, meaningless, report, index_dir, page)
    store.close()
    return 0


def _print(out: Any, results: list, encoder: Any, meaningless: bool, report: Any, index_dir: Path, page: Path) -> None:
    from unite.cli.search import format_table

    if meaningless:
        out.write(
            "NOTE: the Hub could not be reached; these results come from a TINY RANDOM checkpoint"
            " and are meaningless.\n\n"
        )
    out.write(f"model: {encoder.name_or_path}\nindex: {index_dir} ({report.summary()})\n\n")
    for label, target, hits in results:
        out.write(f"query: {label}" + (f"   (only {target})" if target else "") + "\n")
        out.write(format_table(hits, width=50) + "\n\n")
    out.write(f"results page with thumbnails: {page}\n")
    out.write(f'search it yourself: unite search --index {index_dir} "a cat"   or   unite serve --index {index_dir}\n')


def _load(args: argparse.Namespace, folder: Path) -> tuple[Any, bool]:
    from unite.models.encoder import UniteEncoder
    from unite.testing import make_tiny_checkpoint

    if not args.offline:
        try:
            return UniteEncoder.from_pretrained(args.model, device=args.device), False
        except CheckpointError as error:
            sys.stderr.write(f"unite: {error}\nunite: falling back to a tiny random checkpoint\n")
    tiny = folder / "tiny-random-checkpoint"
    if not (tiny / "config.json").exists():
        make_tiny_checkpoint(tiny)
    return UniteEncoder.from_pretrained(tiny, device=args.device), True


def write_corpus(folder: Path) -> Path:
    """Copy the bundled photos, generate two clips and write three notes into ``folder``; returns it."""
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for source in (resources.files("unite") / "demo_data").iterdir():
        if source.name.endswith(".jpg") and not (photos / source.name).exists():
            (photos / source.name).write_bytes(source.read_bytes())
    notes = folder / "notes"
    notes.mkdir(exist_ok=True)
    for name, text in NOTES.items():
        (notes / name).write_text(text + "\n")
    clips = folder / "clips"
    clips.mkdir(exist_ok=True)
    try:
        import av  # noqa: F401
    except ImportError:
        sys.stderr.write("unite: PyAV is not installed (pip install 'unite-embed[video]'); the demo skips its clips\n")
        return folder
    if not (clips / "red_ball.mp4").exists():
        _write_clip(clips / "red_ball.mp4", _ball_frame, frames=24)
    if not (clips / "traffic_light.mp4").exists():
        _write_clip(clips / "traffic_light.mp4", _light_frame, frames=48)
    return folder


def _ball_frame(draw: Any, index: int) -> None:
    x = 20 + index * 10
    draw.ellipse([x, 90, x + 60, 150], fill=(220, 30, 30))


def _light_frame(draw: Any, index: int) -> None:
    lit = index // 16  # 2 s red, 2 s amber, 2 s green at 8 frames per second
    draw.rectangle([130, 20, 190, 220], fill=(40, 40, 40))
    for slot, colour in enumerate([(230, 30, 30), (240, 170, 20), (30, 200, 60)]):
        fill = colour if slot == lit else (70, 70, 70)
        draw.ellipse([140, 30 + slot * 62, 180, 70 + slot * 62], fill=fill)


def _write_clip(path: Path, paint: Any, frames: int, fps: int = 8) -> None:
    import av
    from PIL import Image, ImageDraw

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            image = Image.new("RGB", (320, 240), "white")
            paint(ImageDraw.Draw(image), index)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_page(path: Path, results: list, encoder: Any, meaningless: bool) -> None:
    """A self-contained HTML page: each query with its results, thumbnails inlined as data URLs."""
    from unite.cli.search import time_range
    from unite.server.thumbnails import make_thumbnail

    warning = (
        '<p class="warn">The Hub could not be reached: these results come from a TINY RANDOM checkpoint and are '
        "meaningless.</p>"
        if meaningless
        else ""
    )
    sections = []
    for label, target, hits in results:
        cards = []
        for hit in hits:
            file = hit.local_file() if hit.modality != "text" else None
            if file is None:
                picture = f'<div class="text">{html.escape(hit.text or hit.id)}</div>'
            else:
                data = base64.b64encode(make_thumbnail(hit, file, encoder.settings, size=240)).decode()
                picture = f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(hit.id)}">'
            span = time_range(hit.start, hit.end)
            cards.append(
                f"<figure>{picture}<figcaption><b>{hit.score:.3f}</b> {html.escape(hit.modality)} "
                f"{html.escape(span)}<br>{html.escape(hit.id)}</figcaption></figure>"
            )
        only = f" <small>(only {html.escape(target)})</small>" if target else ""
        sections.append(f"<h2>{html.escape(label)}{only}</h2><div class=grid>{''.join(cards)}</div>")
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>unite demo</title><style>body{font-family:system-ui;margin:2rem}"
        ".grid{display:flex;gap:1rem;flex-wrap:wrap}figure{margin:0;width:240px}img{width:240px;height:180px;"
        "object-fit:cover}.text{height:180px;background:#f4f4f4;padding:.5rem}.warn{color:#a00;font-weight:bold}"
        f"</style><h1>unite demo</h1><p>model: {html.escape(str(encoder.name_or_path))}</p>{warning}"
        + "".join(sections),
        encoding="utf-8",
    )
