"""Batched ``UniteEncoder.encode`` against the reference pipeline run one item at a time, same run, same threads.

The reference pipeline is the independent one of ``tests/reference.py`` (written from docs/reference.md without
unite's code): qwen-vl-utils' stage 1 (PIL open, convert, smart resize, bicubic), transformers' own Qwen2-VL image
processor for stage 2, whole-clip PyAV decoding for videos, literal prompt strings, and transformers' stock
Qwen2-VL network on one unpadded sequence; here its model and processor are loaded once and it embeds one item
per call, as a user of the research code would. unite encodes the same items in one ``encode`` call with its
defaults (token-budget batches, 4096 tokens on the CPU; preparation while the model runs, in threads on up to two
cores and in processes above, ``prepare_in="auto"``; the model's threads shared with the workers), and again
with preparation in worker processes (``prepare_in="processes"``).

The corpus is what a new user brings: camera-size photos (JPEG, up to 4000x3000), smaller pictures, short clips,
texts of varied length and fused text + photo items, shuffled. Both pipelines run alternately in this one
process with the same ``torch`` thread count; the median of ``--repeats`` runs of each is reported with their
ratio, and the embeddings of the two are checked to agree (cosine).

    python benchmarks/cpu_ratio.py [--corpus camera|phone] [--items 60] [--repeats 3] [--threads N] [--output F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference as ref  # noqa: E402  (tests/reference.py: the independent pipeline)
from unite import UniteEncoder  # noqa: E402
from unite.models.loading import CURRENT_LAYOUT  # noqa: E402
from unite.testing import make_image, make_tiny_checkpoint, make_video  # noqa: E402

WORDS = "a red circle on a white background next to a blue square and a green triangle under the lazy fox".split()
#: (height, width) of the photos: camera sizes first, then web-size pictures.
PHOTO_SIZES = [(3000, 4000), (4000, 3000), (2000, 3000), (1536, 2048), (1080, 1920), (768, 1024), (480, 640)]
#: Share of each kind in the corpus.
KINDS = {"text": 0.35, "photo": 0.35, "video": 0.1, "fused": 0.2}
#: ``--corpus``: (photo sizes, kinds). "camera" is the default above; "phone" has phone and web sizes (most
#: photos at the 1280-token cap, so the vision tower weighs more and Pillow less) and more clips.
CORPORA = {
    "camera": (PHOTO_SIZES, KINDS),
    "phone": (
        [(1080, 1920), (1536, 2048), (3024, 4032), (720, 1280), (600, 800), (2448, 3264)],
        {"text": 0.3, "photo": 0.3, "video": 0.15, "fused": 0.25},
    ),
}


def build_corpus(folder: Path, count: int, seed: int = 0, corpus: str = "camera") -> list[dict]:
    """``count`` items of the kinds of ``CORPORA[corpus]``, shuffled; media written into ``folder``."""
    sizes, shares = CORPORA[corpus]
    rng = np.random.default_rng(seed)
    photos = []
    for index, (height, width) in enumerate(sizes):
        path = folder / f"photo{index}.jpg"
        make_image(height, width, seed=index).save(path, quality=90)
        photos.append(str(path))
    clips = [
        str(make_video(folder / f"clip{i}.mp4", frames=72, fps=24, height=360, width=480, seed=i, gop=24))
        for i in range(2)
    ]
    kinds = rng.choice(list(shares), size=count, p=list(shares.values()))
    items = []
    for index, kind in enumerate(kinds):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 200))))
        if kind == "text":
            items.append({"text": text})
        elif kind == "photo":
            items.append({"image": photos[index % len(photos)]})
        elif kind == "video":
            items.append({"video": clips[index % len(clips)]})
        else:
            items.append({"text": text, "image": photos[index % len(photos)]})
    return items


class ReferencePipeline:
    """tests/reference.py with its model, tokenizer and processor loaded once: one item per call."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()

    def embed(self, item: dict) -> np.ndarray:
        images = [ref.image_inputs(item["image"])] if "image" in item else None
        videos = [ref.video_inputs(item["video"], fps=1.0)] if "video" in item else None
        text = item.get("text", "")
        if images:
            content, kind = ref.IMAGE_BLOCK + text, "sentence and image" if text else "image"
        elif videos:
            content, kind = ref.VIDEO_BLOCK + text, "sentence and video" if text else "video"
        else:
            content, kind = text, "sentence"
        prompt = ref.prompt(content, kind)
        kwargs = {}
        for pad, media, key, grid_key in (
            ("<|image_pad|>", images, "pixel_values", "image_grid_thw"),
            ("<|video_pad|>", videos, "pixel_values_videos", "video_grid_thw"),
        ):
            if media:
                (pixels, grid), = media
                prompt = prompt.replace(pad, pad * (int(grid.prod()) // 4))
                kwargs[key], kwargs[grid_key] = pixels, grid.reshape(1, 3)
        ids = torch.tensor([self.tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            hidden = self.model.model(
                input_ids=ids, position_ids=torch.arange(ids.shape[1]).view(1, -1), **kwargs
            ).last_hidden_state
        vector = hidden[0, -1].float()
        return (vector / vector.norm()).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="camera", help="photo sizes and kind shares")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (both)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        checkpoint = make_tiny_checkpoint(folder / "tiny", layout=CURRENT_LAYOUT)
        items = build_corpus(folder, args.items, corpus=args.corpus)
        reference = ReferencePipeline(checkpoint)
        encoder = UniteEncoder.from_pretrained(checkpoint, device="cpu")
        with_media = [item for item in items if "image" in item or "video" in item]
        encoder.encode(with_media[:2] + items[:2], show_progress_bar=False)  # warm-up: worker processes, allocator
        reference.embed(items[0])
        modes = {"unite_batched": {}, "unite_batched_processes": {"prepare_in": "processes"}}
        seconds: dict[str, list[float]] = {name: [] for name in modes} | {"reference_one_at_a_time": []}
        for _ in range(args.repeats):
            for name, options in modes.items():
                start = time.perf_counter()
                ours = encoder.encode(items, batch_size=args.batch_size, show_progress_bar=False, **options)
                seconds[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = np.stack([reference.embed(item) for item in items])
            seconds["reference_one_at_a_time"].append(time.perf_counter() - start)
        cosines = np.sum(ours * theirs, axis=1)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    results = {
        "items": args.items,
        "corpus_name": args.corpus,
        "corpus": {kind: sum(1 for item in items if _kind(item) == kind) for kind in KINDS},
        "photo_sizes": CORPORA[args.corpus][0],
        "threads": args.threads,
        "cores": len(os.sched_getaffinity(0)),
        "repeats": args.repeats,
        "seconds": seconds,
        "items_per_s": {name: args.items / value for name, value in medians.items()},
        "ratio_batched_to_reference": medians["reference_one_at_a_time"] / medians["unite_batched"],
        "ratio_batched_processes_to_reference": medians["reference_one_at_a_time"]
        / medians["unite_batched_processes"],
        "min_cosine_unite_vs_reference": float(cosines.min()),
        "model": "tiny random checkpoint (unite.testing)",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    text = json.dumps(results, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _kind(item: dict) -> str:
    if "video" in item:
        return "video"
    if "image" in item:
        return "fused" if "text" in item else "photo"
    return "text"


if __name__ == "__main__":
    sys.exit(main())
