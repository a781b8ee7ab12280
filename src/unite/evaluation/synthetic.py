"""Synthetic stand-ins of every public layout the loaders read, for tests, demos and trying ``unite eval``.

Each builder writes tiny files in the layout's own format (names, columns, nesting) with synthetic images and
clips from :mod:`unite.testing`. Nothing is downloaded; the numbers they give mean nothing.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Callable
from pathlib import Path

from unite.evaluation.registry import MMEB_CLASS_COUNTS
from unite.evaluation.tasks import Layout, TaskSpec
from unite.testing import make_image, make_video

__all__ = ["CLIP_FRAMES", "build_stand_in", "caption", "write_generic_task"]

#: Frames of every synthetic clip (a larger ``video_frames`` repeats the last frame, as for any short video).
CLIP_FRAMES = 8
_WORDS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink", "brown", "gold")


def caption(index: int, variant: int = 0) -> str:
    """A distinct caption for item ``index`` (``variant`` tells several captions of one item apart)."""
    colour, shape = _WORDS[index % len(_WORDS)], ("circle", "square", "triangle", "star")[variant % 4]
    return f"caption {index}.{variant}: a {colour} {shape} number {index}"


def _image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(36, 48, seed=seed).save(path)
    return path.name


def _clip(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_video(path, frames=CLIP_FRAMES, fps=4, height=32, width=48, seed=seed, gop=4)
    return path.name


def write_generic_task(folder: str | Path, count: int = 4, name: str = "synthetic-generic") -> Path:
    """The generic format: ``queries.jsonl`` (text), ``corpus.jsonl`` (text and image items), ``qrels.tsv``
    (query i judges candidate i relevant; query 0 also candidate 1 with grade 2) and ``task.yaml``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    queries, corpus, qrels = [], [], []
    for index in range(count):
        queries.append({"id": f"q{index}", "text": caption(index)})
        if index % 2:
            _image(folder / "images" / f"d{index}.png", seed=index)
            corpus.append({"id": f"d{index}", "image": f"images/d{index}.png"})
        else:
            corpus.append({"id": f"d{index}", "text": caption(index, 1)})
        qrels.append(f"q{index}\td{index}\t1")
    qrels.append("q0\td1\t2")
    (folder / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in queries))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(line) + "\n" for line in corpus))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (folder / "task.yaml").write_text(
        f"name: {name}\n"
        "description: synthetic stand-in of the generic format\n"
        "main_metric: ndcg@10\n"
        "metrics: [recall@1, recall@5, recall@10, ndcg@10, mrr@10, median_rank]\n"
    )
    return folder / "task.yaml"


def build_stand_in(spec: TaskSpec, data_root: str | Path, count: int = 3) -> Path:
    """Write a synthetic stand-in of ``spec``'s public layout under ``data_root / spec.data_dir``.

    ``count`` items (images, videos, queries) are written; pair layouts with several captions per item get two.
    Returns the data folder.
    """
    folder = Path(data_root) / spec.data_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    _BUILDERS[spec.layout](spec, folder, count)
    return folder


def _build_mmeb(spec: TaskSpec, folder: Path, count: int) -> None:
    subset = spec.options.get("subset", spec.name)
    image_root = folder / spec.options.get("image_root", "eval_images")
    pool = max(3, count)
    records = []
    for index in range(count):
        query_image = f"{subset}/q{index}.jpg"
        _image(image_root / query_image, seed=index)
        if subset in MMEB_CLASS_COUNTS:  # classification: the candidates are class names, the positive first
            names = [f"class {(index + shift) % pool}" for shift in range(pool)]
            texts, images = names, [""] * pool
        else:  # retrieval-like: images with a fixed instruction, the positive first
            texts = ["<|image_1|>\nRepresent the given image."] * pool
            images = [f"{subset}/c{(index + shift) % pool}.jpg" for shift in range(pool)]
            for name in images:
                if not (image_root / name).exists():
                    _image(image_root / name, seed=100 + int(name.split("/c")[1].split(".")[0]))
        records.append(
            {
                "qry_text": "<|image_1|> Represent the given image for classification",
                "qry_img_path": query_image,
                "tgt_text": texts,
                "tgt_img_path": images,
            }
        )
    (folder / f"{subset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _build_karpathy(spec: TaskSpec, folder: Path, count: int) -> None:
    media = folder / spec.files.get("media", "")
    images = []
    for index in range(count + 1):
        filepath = "val2014" if spec.files.get("media", "") == "" else ""
        name = _image(media / filepath / f"{index:04d}.jpg", seed=index)
        split = "test" if index < count else "train"  # one train image that the loader must skip
        sentences = [{"raw": caption(index, variant), "tokens": []} for variant in range(2)]
        record = {"filename": name, "split": split, "sentences": sentences, "imgid": index}
        if filepath:
            record["filepath"] = filepath
        images.append(record)
    (folder / spec.files.get("annotations", "dataset_flickr30k.json")).write_text(
        json.dumps({"images": images, "dataset": "synthetic"})
    )


def _build_sharegpt4v(spec: TaskSpec, folder: Path, count: int) -> None:
    records = []
    for index in range(count):
        image = f"coco/train2017/{index:06d}.jpg"
        _image(folder / spec.files.get("media", "") / image, seed=index)
        conversations = [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": caption(index)}]
        records.append({"id": str(index), "image": image, "conversations": conversations})
    name = spec.files.get("annotations", "share-captioner_coco_lcs_sam_1246k_1107.json")
    (folder / name).write_text(json.dumps(records))


def _build_caption_folder(spec: TaskSpec, folder: Path, count: int) -> None:
    (folder / "caption").mkdir(exist_ok=True)
    for index in range(count):
        _image(folder / "image" / f"{index}.jpg", seed=index)
        (folder / "caption" / f"{index}.txt").write_text(caption(index) + "\n")


def _build_docci(spec: TaskSpec, folder: Path, count: int) -> None:
    lines = []
    for index in range(count + 1):
        split = "test" if index < count else "train"
        name = _image(folder / "images" / f"{split}_{index:05d}.jpg", seed=index)
        record = {
            "example_id": f"{split}_{index:05d}",
            "split": split,
            "image_file": name,
            "description": caption(index),
        }
        lines.append(json.dumps(record))
    (folder / "docci_descriptions.jsonlines").write_text("\n".join(lines) + "\n")


def _build_msrvtt(spec: TaskSpec, folder: Path, count: int) -> None:
    with (folder / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "key", "vid_key", "video_id", "sentence"])
        for index in range(count):
            _clip(folder / "videos" / f"video{7000 + index}.mp4", seed=index)
            writer.writerow([index, f"ret{index}", f"msr{7000 + index}", f"video{7000 + index}", caption(index)])


def _build_msvd(spec: TaskSpec, folder: Path, count: int) -> None:
    captions = {}
    for index in range(count):
        video = f"clip_{index}_5_10"
        _clip(folder / "YouTubeClips" / f"{video}.mp4", seed=index)
        captions[video] = [caption(index, variant).split() for variant in range(2)]
    (folder / "test_list.txt").write_text("\n".join(captions) + "\n")
    (folder / "raw-captions.pkl").write_bytes(pickle.dumps(captions))


def _build_didemo(spec: TaskSpec, folder: Path, count: int) -> None:
    records = []
    for index in range(count):
        video = f"{index}@N00_{index}.mp4"
        _clip(folder / "videos" / video, seed=index)
        for variant in range(2):
            records.append({"video": video, "description": caption(index, variant), "times": [[0, 0]]})
    (folder / "test_data.json").write_text(json.dumps(records))


def _build_carebench(spec: TaskSpec, folder: Path, count: int) -> None:
    records = []
    for index in range(count):
        video = _clip(folder / "videos" / f"{index:04d}.mp4", seed=index)
        records.append(
            {
                "video": video,
                "caption": caption(index, 0),
                "spatial_caption": caption(index, 1),
                "temporal_caption": caption(index, 2),
            }
        )
    (folder / "json").mkdir(exist_ok=True)
    (folder / "json" / "metadata.json").write_text(json.dumps(records))


def _build_webvid_covr(spec: TaskSpec, folder: Path, count: int) -> None:
    with (folder / "webvid8m-covr_test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pth1", "pth2", "edit", "txt1", "txt2"])
        for index in range(count):
            source, target = f"{index}/src{index}", f"{index}/tgt{index}"
            _clip(folder / "videos" / f"{source}.mp4", seed=index)
            _clip(folder / "videos" / f"{target}.mp4", seed=50 + index)
            writer.writerow([source, target, f"make it {_WORDS[index % len(_WORDS)]}", "", ""])


_BUILDERS: dict[Layout, Callable[[TaskSpec, Path, int], None]] = {
    Layout.MMEB: _build_mmeb,
    Layout.KARPATHY: _build_karpathy,
    Layout.SHAREGPT4V: _build_sharegpt4v,
    Layout.CAPTION_FOLDER: _build_caption_folder,
    Layout.DOCCI: _build_docci,
    Layout.MSRVTT: _build_msrvtt,
    Layout.MSVD: _build_msvd,
    Layout.DIDEMO: _build_didemo,
    Layout.CAREBENCH: _build_carebench,
    Layout.WEBVID_COVR: _build_webvid_covr,
}
