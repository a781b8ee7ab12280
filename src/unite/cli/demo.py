"""``unite demo``: embed a small mixed corpus and show which items sit together."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from unite.errors import CheckpointError

__all__ = ["DEFAULT_MODEL", "add_parser", "run"]

DEFAULT_MODEL = "friedrichor/Unite-Base-Qwen2-VL-2B"

SHAPES = {
    "red_circle": ((220, 30, 30), "ellipse"),
    "blue_square": ((30, 60, 220), "rectangle"),
    "green_triangle": ((30, 170, 60), "polygon"),
}
QUERIES = ["a red circle", "a blue square", "a green triangle", "a red ball moving from left to right"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="embed a small mixed corpus (texts, images, a video) and print the similarities",
        description=(
            "Write a small example corpus (shape images, a short clip, captions), embed it with a UNITE checkpoint "
            "and print text-to-media cosine similarities. When the Hugging Face Hub cannot be reached, a tiny random "
            "checkpoint is used instead and the results are labelled meaningless."
        ),
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default %(default)s)")
    parser.add_argument("--offline", action="store_true", help="skip the Hub and use a tiny random checkpoint")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("demo_output"),
        help="where the corpus and vectors go (default %(default)s)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unite.outputs import write_embeddings

    folder = args.output_dir
    items = write_corpus(folder)
    encoder, meaningless = _load(args, folder)
    vectors = encoder.encode([item for _, item in items], batch_size=8, show_progress_bar=False)
    write_embeddings(folder / "corpus.npy", vectors)
    queries = encoder.encode(QUERIES, show_progress_bar=False)
    scores = queries @ vectors.T
    out = sys.stdout
    if meaningless:
        out.write(
            "NOTE: the Hub could not be reached; these scores come from a TINY RANDOM checkpoint"
            " and are meaningless.\n\n"
        )
    out.write(
        f"model: {encoder.name_or_path}   corpus: {folder / 'items.jsonl'}   vectors: {folder / 'corpus.npy'}\n\n"
    )
    names = [name for name, _ in items]
    width = max(len(query) for query in QUERIES)
    out.write(" " * width + "  " + "  ".join(f"{name:>16}" for name in names) + "\n")
    for query, row in zip(QUERIES, scores):
        best = int(np.argmax(row))
        cells = [f"{score:>15.3f}{'*' if column == best else ' '}" for column, score in enumerate(row)]
        out.write(f"{query:<{width}}  " + "  ".join(cells) + "\n")
    out.write("\n(* marks each query's best match)\n")
    return 0


def _load(args: argparse.Namespace, folder: Path) -> tuple[Any, bool]:
    from unite.models.encoder import UniteEncoder
    from unite.testing import make_tiny_checkpoint

    if not args.offline:
        try:
            return UniteEncoder.from_pretrained(args.model, device=args.device), False
        except CheckpointError as error:
            sys.stderr.write(f"unite: {error}\nunite: falling back to a tiny random checkpoint\n")
    tiny = make_tiny_checkpoint(folder / "tiny-random-checkpoint")
    return UniteEncoder.from_pretrained(tiny, device=args.device), True


def write_corpus(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Draw the shape images and the clip, write ``items.jsonl``; returns (name, item) pairs."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, dict[str, Any]]] = []
    for name, (colour, shape) in SHAPES.items():
        image = Image.new("RGB", (320, 240), "white")
        draw = ImageDraw.Draw(image)
        if shape == "polygon":
            draw.polygon([(160, 40), (60, 200), (260, 200)], fill=colour)
        else:
            getattr(draw, shape)([90, 50, 230, 190], fill=colour)
        image.save(folder / f"{name}.png")
        items.append((name, {"image": f"{name}.png"}))
    if _write_clip(folder / "red_ball.mp4"):
        items.append(("red_ball_clip", {"video": "red_ball.mp4"}))
    items.append(("caption", {"text": "A drawing of a red circle on a white background."}))
    with (folder / "items.jsonl").open("w") as handle:
        for _, item in items:
            handle.write(json.dumps(item) + "\n")
    return [
        (name, {key: (str(folder / value) if key != "text" else value) for key, value in item.items()})
        for name, item in items
    ]


def _write_clip(path: Path, frames: int = 24, fps: int = 8) -> bool:
    try:
        import av
    except ImportError:
        sys.stderr.write("unite: PyAV is not installed (pip install 'unite-embed[video]'); the demo skips its video\n")
        return False
    from PIL import Image, ImageDraw

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            image = Image.new("RGB", (320, 240), "white")
            x = 20 + index * 10
            ImageDraw.Draw(image).ellipse([x, 90, x + 60, 150], fill=(220, 30, 30))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return True
