"""Synthetic stand-ins of every public layout the loaders read, for tests, demos and trying ``unite eval``.

Each builder writes tiny files in the layout's own format (names, columns, nesting) with synthetic images and
clips from :mod:`unite.testing`. Nothing is downloaded; the numbers they give mean nothing.
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from unite.errors import ConfigError
from unite.evaluation.locate import candidates
from unite.evaluation.registry import MMEB_CLASS_COUNTS, SHAREGPT4V_FILE
from unite.evaluation.tasks import Layout, TaskSpec
from unite.testing import make_image, make_video

__all__ = [
    "CLIP_FRAMES",
    "IMAGE_FORMS",
    "build_image_stand_in",
    "build_stand_in",
    "caption",
    "covr_path",
    "didemo_video_name",
    "write_generic_task",
]

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


def build_image_stand_in(spec: TaskSpec, data_root: str | Path, count: int = 3, form: str = "unzipped") -> Path:
    """Write a stand-in of an image benchmark (MMEB, Karpathy, ShareGPT4V, Urban1K, DOCCI) in one of its forms.

    Forms (see each spec's ``source`` for the real downloads):
        ``download``: the files as they ship, archives included: MMEB-eval's ``images.zip``, ``Urban1k.zip``,
            ``caption_datasets.zip`` with COCO's ``val2014.zip`` or Flickr30k's ``flickr30k-images.zip``;
        ``unzipped``: the same after a plain unzip (or untar) where they lie; :func:`build_stand_in` writes this;
        ``flattened``: the layout earlier docs asked for (``MMEB-eval/<subset>.jsonl``, ``Urban1k/caption``, ...);
        ``v2`` (MMEB only): MMEB-V2, annotations with ``qry_inst`` / ``tgt_inst`` in ``MMEB-V2/MMEB_Test_Instruct``.

    Returns:
        The data folder written (under ``data_root``, which is what ``--data-root`` takes).

    Raises:
        ConfigError: not an image benchmark, or an unknown form.
    """
    if spec.layout not in _IMAGE_BUILDERS:
        raise ConfigError(f"task {spec.name}: layout {spec.layout.value} is not an image benchmark")
    if form not in IMAGE_FORMS or (form == "v2" and spec.layout is not Layout.MMEB):
        choices = ", ".join(IMAGE_FORMS)
        raise ConfigError(f"task {spec.name}: form must be one of {choices} (v2: MMEB only), got {form!r}")
    folder = Path(data_root) / (MMEB_V2_DIR if form == "v2" else spec.data_dirs[0])
    folder.mkdir(parents=True, exist_ok=True)
    _IMAGE_BUILDERS[spec.layout](spec, folder, count, form)
    return folder


#: Forms of :func:`build_image_stand_in`.
IMAGE_FORMS = ("download", "unzipped", "flattened", "v2")
MMEB_V2_DIR = "MMEB-V2"
#: The instructions the MMEB-V2 stand-in carries (``qry_inst``; ``tgt_inst`` of image candidates and of labels).
MMEB_V2_QUERY_INSTRUCTION = "<|image_1|> Represent the given image with the following question:"
MMEB_V2_CLASSIFY_INSTRUCTION = "<|image_1|> Represent the given image for classification"
MMEB_V2_TARGET_INSTRUCTION = "<|image_1|> Represent the given image."
MMEB_V2_LABEL_INSTRUCTION = "Represent the class label:"  # VLM2Vec's classification parser ignores tgt_inst


def _zip_into(source: Path, archive: Path, inside: str = "") -> None:
    """Move the files of ``source`` into ``archive`` (appended), under ``inside/``, as the download ships them."""
    with zipfile.ZipFile(archive, "a") as bundle:
        present = set(bundle.namelist())
        for path in sorted(source.rglob("*")):
            name = "/".join(part for part in (inside, path.relative_to(source).as_posix()) if part)
            if path.is_file() and name not in present:
                bundle.write(path, name)
    shutil.rmtree(source)


def _write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def _build_mmeb(spec: TaskSpec, folder: Path, count: int, form: str = "unzipped") -> None:
    """MMEB-eval as the Hub stores it, ``<subset>/test-00000-of-00001.parquet``, with ``images.zip`` (download)
    or its contents in ``eval_images/`` (unzipped, as VLM2Vec's README unzips it); ``<subset>.jsonl`` beside
    ``eval_images/`` (flattened); MMEB-V2 (v2): ``MMEB_Test_Instruct/<subset>/test-00000-of-00001.parquet`` with
    ``qry_inst`` / ``tgt_inst`` and the images in ``image-tasks/MMEB/`` as ``mmeb_v1.tar.gz`` unpacks."""
    subset = spec.options.get("subset", spec.name)
    image_dir = folder / ("image-tasks/MMEB" if form == "v2" else "eval_images")
    records = []
    for index in range(count):
        record, images = _mmeb_record(subset, index, max(3, count), form == "v2")
        for relative, seed in images:
            if not (image_dir / relative).exists():
                _image(image_dir / relative, seed=seed)
        records.append(record)
    if form == "flattened":
        (folder / f"{subset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return
    annotations = folder / ("MMEB_Test_Instruct" if form == "v2" else "") / subset
    _write_parquet(annotations / "test-00000-of-00001.parquet", records)
    if form == "download":
        _zip_into(image_dir, folder / "images.zip")


def _mmeb_record(subset: str, index: int, pool: int, instructions: bool) -> tuple[dict, list[tuple[str, int]]]:
    """One MMEB test record (the positive first) and the images it names with their seeds.

    Classification subsets rank class names; the others rank images. With ``instructions`` the record has the
    MMEB-V2 columns: the instruction moves from ``qry_text`` / ``tgt_text`` to ``qry_inst`` / ``tgt_inst``.
    """
    query_image = f"{subset}/q{index}.jpg"
    images = [(query_image, index)]
    if subset in MMEB_CLASS_COUNTS:
        texts, targets = [f"class {(index + shift) % pool}" for shift in range(pool)], [""] * pool
        record = {"qry_text": "<|image_1|> Represent the given image for classification", "qry_img_path": query_image}
        if instructions:
            record.update(qry_inst=MMEB_V2_CLASSIFY_INSTRUCTION, qry_text="", tgt_inst=MMEB_V2_LABEL_INSTRUCTION)
    else:
        targets = [f"{subset}/c{(index + shift) % pool}.jpg" for shift in range(pool)]
        images += [(name, 100 + (index + shift) % pool) for shift, name in enumerate(targets)]
        texts = ["<|image_1|>\nRepresent the given image."] * pool
        record = {"qry_text": f"<|image_1|> {caption(index)}", "qry_img_path": query_image}
        if instructions:
            record.update(qry_inst=MMEB_V2_QUERY_INSTRUCTION, qry_text=caption(index))
            record["tgt_inst"] = MMEB_V2_TARGET_INSTRUCTION
            texts = [""] * pool
    record.update(tgt_text=texts, tgt_img_path=targets)
    return record, images


def _build_karpathy(spec: TaskSpec, folder: Path, count: int, form: str = "unzipped") -> None:
    """Karpathy's ``dataset_coco.json`` (filepath ``val2014``; the first test image has 7 sentences, the others 5)
    or ``dataset_flickr30k.json`` (5 each), with one train and one other-split image the loader must skip, and
    the images in ``val2014/`` or ``flickr30k-images/``; zipped as ``caption_datasets.zip`` and ``val2014.zip`` /
    ``flickr30k-images.zip`` in the download form."""
    name = PurePosixPath(candidates(spec.files.get("annotations"), "dataset_flickr30k.json")[0]).name
    coco = name == "dataset_coco.json"
    image_folder = "val2014" if coco else "flickr30k-images"
    images = []
    for index in range(count + 2):
        split = "test" if index < count else ("restval" if coco else "val", "train")[index - count]
        filename = f"COCO_val2014_{391895 + index:012d}.jpg" if coco else f"{1000000000 + index}.jpg"
        _image(folder / image_folder / filename, seed=index)
        sentences = [
            {"tokens": caption(index, variant).split(), "raw": caption(index, variant), "imgid": index,
             "sentid": 10 * index + variant}
            for variant in range(7 if coco and index == 0 else 5)
        ]
        record = {"filename": filename, "imgid": index, "split": split, "sentences": sentences,
                  "sentids": [s["sentid"] for s in sentences]}
        images.append({"filepath": image_folder, **record, "cocoid": 391895 + index} if coco else record)
    (folder / name).write_text(json.dumps({"images": images, "dataset": "coco" if coco else "flickr30k"}))
    if form == "download":
        with zipfile.ZipFile(folder / "caption_datasets.zip", "a") as bundle:
            bundle.write(folder / name, name)
        (folder / name).unlink()
        _zip_into(folder / image_folder, folder / f"{image_folder}.zip", image_folder)


def _build_sharegpt4v(spec: TaskSpec, folder: Path, count: int, form: str = "unzipped") -> None:
    """The captioner JSON and its images as ShareGPT4V's docs/Data.md lays out ``data/`` (the JSON in
    ``data/sharegpt4v/``); flattened: Long-CLIP's layout, JSON and images in one folder. Captions span lines."""
    root = folder if form == "flattened" else folder / "data"
    sources = ("coco/train2017/{:012d}.jpg", "sam/images/sa_{}.jpg", "llava/llava_pretrain/images/00000/{:09d}.jpg")
    records = []
    for index in range(count):
        image = sources[index % len(sources)].format(index)
        _image(root / image, seed=index)
        text = f"{caption(index)}\nIt is drawn on a plain background.\n\nNothing else is in view."
        conversations = [{"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": text}]
        records.append({"id": PurePosixPath(image).stem, "image": image, "conversations": conversations})
    json_folder = root if form == "flattened" else root / "sharegpt4v"
    json_folder.mkdir(parents=True, exist_ok=True)
    (json_folder / SHAREGPT4V_FILE).write_text(json.dumps(records))


def _build_caption_folder(spec: TaskSpec, folder: Path, count: int, form: str = "unzipped") -> None:
    """Urban1k as ``Urban1k.zip`` unpacks (``Urban1k/image/<n>.jpg``, ``Urban1k/caption/<n>.txt``), in the data
    folder; zipped (download) or flattened (``image/``, ``caption/`` in the data folder). Even-numbered caption
    files hold a second line that the first-line rule leaves out."""
    tree = folder if form == "flattened" else folder / "Urban1k"
    for index in range(count):
        _image(tree / "image" / f"{index}.jpg", seed=index)
        extra = "A second line that Long-CLIP never reads.\n" if index % 2 == 0 else ""
        (tree / "caption").mkdir(parents=True, exist_ok=True)
        (tree / "caption" / f"{index}.txt").write_text(f"{caption(index)}\n{extra}")
    if form == "download":
        _zip_into(tree, folder / "Urban1k.zip", "Urban1k")


def _build_docci(spec: TaskSpec, folder: Path, count: int, form: str = "unzipped") -> None:
    """DOCCI's ``docci_descriptions.jsonlines`` and ``images/`` as ``docci_images.tar.gz`` untars (every form),
    with a train and a qual_dev record the loader must skip."""
    lines = []
    for index in range(count + 2):
        split = "test" if index < count else ("train", "qual_dev")[index - count]
        name = _image(folder / "images" / f"{split}_{index:05d}.jpg", seed=index)
        record = {"example_id": f"{split}_{index:05d}", "split": split, "image_file": name}
        record["description"] = caption(index)
        lines.append(json.dumps(record))
    (folder / "docci_descriptions.jsonlines").write_text("\n".join(lines) + "\n")


# Video layouts: written as the official downloads unpack (see each spec's ``source``), with one extra item the
# loader must leave out (a train video, a video outside the test list).


def _build_msrvtt(spec: TaskSpec, folder: Path, count: int) -> None:
    """CLIP4Clip's ``msrvtt_data.zip`` and Frozen-in-Time's ``MSRVTT.zip``, both unzipped in the data folder."""
    data = folder / "msrvtt_data"
    data.mkdir(parents=True, exist_ok=True)
    with (data / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for index in range(count):
            _clip(folder / "MSRVTT" / "videos" / "all" / f"video{7000 + index}.mp4", seed=index)
            writer.writerow([f"ret{index}", f"msr{7000 + index}", f"video{7000 + index}", caption(index)])
    _clip(folder / "MSRVTT" / "videos" / "all" / "video1.mp4", seed=99)  # a train video
    (data / "MSRVTT_train.9k.csv").write_text("video_id\nvideo1\n")
    sentences = [{"video_id": "video1", "caption": "a train sentence", "sen_id": 0}]
    (data / "MSRVTT_data.json").write_text(json.dumps({"videos": [{"video_id": "video1"}], "sentences": sentences}))


def _build_msvd(spec: TaskSpec, folder: Path, count: int) -> None:
    """CLIP4Clip's ``msvd_data.zip`` unzipped and ``YouTubeClips.tar`` untarred in the data folder."""
    captions = {}
    for index in range(count):
        video = f"clip_{index}_5_10"
        _clip(folder / "YouTubeClips" / f"{video}.avi", seed=index)
        captions[video] = [caption(index, variant).split() for variant in range(2)]
    _clip(folder / "YouTubeClips" / "-train_0_4.avi", seed=99)
    data = folder / "msvd_data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "test_list.txt").write_text("\n".join(captions) + "\n")
    (data / "train_list.txt").write_text("-train_0_4\n")
    (data / "val_list.txt").write_text("")
    (data / "raw-captions.pkl").write_bytes(pickle.dumps({**captions, "-train_0_4": [["a", "train", "clip"]]}))


def didemo_video_name(index: int) -> str:
    """A DiDeMo video name as ``test_data.json`` gives it (Flickr user, photo id, secret, original extension)."""
    extension = ("mov", "avi", "mp4", "m4v", "mpg")[index % 5]
    return f"{10000000 + index}@N0{index % 10}_{3600000000 + index}_{index:010x}.{extension}"


def _build_didemo(spec: TaskSpec, folder: Path, count: int) -> None:
    """LocalizingMoments' ``test_data.json``, collaborative-experts' ``test_list.txt`` (the test videos, one of the
    annotated videos left out) and ``videos/<video>.mp4`` as ``download_videos_AWS.py`` names them."""
    records = []
    for index in range(count + 1):
        video = didemo_video_name(index)
        _clip(folder / "videos" / f"{video}.mp4", seed=index)
        for variant in range(2):
            records.append(
                {
                    "num_segments": 6,
                    "description": caption(index, variant),
                    "dl_link": f"https://www.flickr.com/video_download.gne?id={3600000000 + index}",
                    "times": [[variant, variant + 1], [variant, variant]],
                    "video": video,
                    "annotation_id": 2 * index + variant,
                }
            )
    (folder / "test_data.json").write_text(json.dumps(records))
    (folder / "test_list.txt").write_text("".join(f"{didemo_video_name(index)}\n" for index in range(count)))


def _build_carebench(spec: TaskSpec, folder: Path, count: int) -> None:
    """Hugging Face ``MCG-NJU/CaReBench`` as downloaded: ``json/metadata.json`` and ``videos/videos.zip`` (the
    clips in a folder inside the archive, beside a copy of the metadata)."""
    records, staging = [], folder / ".staging"
    for index in range(count):
        video = _clip(staging / f"v_{30 + index:08d}_{index}.mp4", seed=index)
        records.append(
            {
                "video": video,
                "caption": caption(index, 0),
                "spatial_caption": caption(index, 1),
                "temporal_caption": caption(index, 2),
                "category": "Sports",
                "subcategory": "Ball games",
            }
        )
    (folder / "json").mkdir(parents=True, exist_ok=True)
    (folder / "json" / "metadata.json").write_text(json.dumps(records, indent=2))
    (folder / "videos").mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / "videos" / "videos.zip", "w") as archive:
        for record in records:
            archive.write(staging / record["video"], f"videos/{record['video']}")
        archive.writestr("videos/metadata.json", json.dumps(records))
    shutil.rmtree(staging)
    (folder / "README.md").write_text("# CaReBench (synthetic stand-in)\n")


def covr_path(index: int, role: str) -> str:
    """A WebVid path as the CoVR CSV names videos: ``<page folder>/<video id>`` (``role``: ``src`` or ``tgt``)."""
    return f"{index * 50 + 1:06d}_{index * 50 + 50:06d}/{1000000 + 2 * index + (role == 'tgt')}"


def _build_webvid_covr(spec: TaskSpec, folder: Path, count: int) -> None:
    """The CoVR code's downloads: ``annotation/webvid-covr/webvid8m-covr_test.csv`` and
    ``datasets/WebVid/8M/train/<pth>.mp4``. Query 1's source video is query 0's target (self-similarity)."""
    annotation = folder / "annotation" / "webvid-covr" / "webvid8m-covr_test.csv"
    annotation.parent.mkdir(parents=True, exist_ok=True)
    videos = folder / "datasets" / "WebVid" / "8M" / "train"
    with annotation.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pth1", "pth2", "edit", "txt1", "txt2"])
        for index in range(count):
            source = covr_path(0, "tgt") if index == 1 else covr_path(index, "src")
            target = covr_path(index, "tgt")
            for path, seed in ((source, index), (target, 50 + index)):
                if not (videos / f"{path}.mp4").exists():
                    _clip(videos / f"{path}.mp4", seed=seed)
            edit = f"make it {_WORDS[index % len(_WORDS)]}"
            writer.writerow([source, target, edit, caption(index), caption(index, 1)])


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

#: The image benchmarks' builders, which also take a form (:func:`build_image_stand_in`).
_IMAGE_BUILDERS: dict[Layout, Callable[[TaskSpec, Path, int, str], None]] = {
    Layout.MMEB: _build_mmeb,
    Layout.KARPATHY: _build_karpathy,
    Layout.SHAREGPT4V: _build_sharegpt4v,
    Layout.CAPTION_FOLDER: _build_caption_folder,
    Layout.DOCCI: _build_docci,
}
