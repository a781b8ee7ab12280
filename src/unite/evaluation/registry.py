"""The benchmarks the UNITE paper reports, as :class:`TaskSpec` data, with the paper's numbers.

Numbers and protocols: docs/reference.md section 10 (frame counts: docs/reference.md section 8). Data cannot be
bundled; each spec's ``source`` says where the public files come from, and ``data_dir`` / ``files`` where they go
under the data root (``--data-root`` or ``UNITE_EVAL_DATA``). Paper values are percentages of the main metric.
"""

from __future__ import annotations

from unite.errors import ConfigError
from unite.evaluation.metrics import DEFAULT_METRICS
from unite.evaluation.tasks import Direction, Layout, TaskSpec

__all__ = ["GROUPS", "MMEB_AGGREGATES", "REGISTRY", "get_task", "resolve_task_names"]

#: Frame counts the paper evaluated with (docs/reference.md section 8).
MSRVTT_MSVD_DIDEMO_FRAMES = 48
CAREBENCH_FRAMES = 32
WEBVID_COVR_FRAMES = 16
#: DiDeMo videos are cut to their first 30 seconds (CaReBench's trim30; its annotations cover 30 s).
DIDEMO_TRIM_SECONDS = 30

# ------------------------------------------------------------------------------------------------------ MMEB

MMEB_SOURCE = (
    "MMEB-eval (VLM2Vec v1; instructions inside qry_text / tgt_text): `huggingface-cli download TIGER-Lab/MMEB-eval "
    "--repo-type dataset --local-dir DATA_ROOT/MMEB-eval` gives <subset>/test-00000-of-00001.parquet for each of "
    "the 36 subsets and images.zip; unzip it as VLM2Vec's README does (`unzip images.zip -d eval_images/`) or leave "
    "it zipped (extracted once on first use). qry_img_path and tgt_img_path resolve against eval_images/. "
    "MMEB-V2 (instructions in qry_inst / tgt_inst, used when present): the annotations VLM2Vec's V2 evaluation "
    "loads, `huggingface-cli download ziyjiang/MMEB_Test_Instruct --repo-type dataset --local-dir "
    "DATA_ROOT/MMEB-V2/MMEB_Test_Instruct`, and the images `huggingface-cli download TIGER-Lab/MMEB-V2 "
    "image-tasks/mmeb_v1.tar.gz --repo-type dataset --local-dir DATA_ROOT/MMEB-V2`, untarred in image-tasks/ "
    "(`tar -xzf mmeb_v1.tar.gz` gives MMEB/<subset>/...; VLM2Vec's download_data.sh then moves MMEB/* up one "
    "level: both work). When DATA_ROOT/MMEB-eval exists it is used first."
)
#: Data folders of MMEB tasks, tried in order: the v1 download, the MMEB-V2 download, the V2 annotations alone.
MMEB_DATA_DIRS = ("MMEB-eval", "MMEB-V2", "MMEB_Test_Instruct")
#: Folders qry_img_path / tgt_img_path resolve against, tried in order; the first holding a subset's first image
#: is used: images.zip unzipped as VLM2Vec's README says, or still zipped (and its tree with a top images/ folder
#: too), MMEB-V2's mmeb_v1.tar.gz untarred (MMEB/) or moved up as its download_data.sh does, beside or above.
MMEB_IMAGE_ROOTS = (
    "eval_images",
    "eval_images/images",
    "images.zip",
    "images.zip/images",
    "image-tasks/MMEB",
    "image-tasks",
    "../MMEB-V2/image-tasks/MMEB",
    "../MMEB-V2/image-tasks",
    "MMEB",
)


def _mmeb_files(subset: str) -> dict[str, tuple[str, ...]]:
    """Where a subset's test file lies: the Hub path (any shard count), the Hub's parquet-converter path, the
    MMEB-V2 annotations inside or beside MMEB-V2/, and JSON lines exports (the flattened layout)."""
    annotations = (
        f"{subset}/test-*.parquet",
        f"{subset}/test/*.parquet",
        f"MMEB_Test_Instruct/{subset}/test-*.parquet",
        f"../MMEB_Test_Instruct/{subset}/test-*.parquet",
        f"{subset}.jsonl",
        f"{subset}/test.jsonl",
    )
    return {"annotations": annotations, "images": MMEB_IMAGE_ROOTS}
#: meta-task -> ((dataset, in-distribution), ...): 36 datasets, 20 in-distribution and 16 out-of-distribution.
MMEB_DATASETS: dict[str, tuple[tuple[str, bool], ...]] = {
    "Classification": (
        ("ImageNet-1K", True),
        ("N24News", True),
        ("HatefulMemes", True),
        ("VOC2007", True),
        ("SUN397", True),
        ("Place365", False),
        ("ImageNet-A", False),
        ("ImageNet-R", False),
        ("ObjectNet", False),
        ("Country211", False),
    ),
    "VQA": (
        ("OK-VQA", True),
        ("A-OKVQA", True),
        ("DocVQA", True),
        ("InfographicsVQA", True),
        ("ChartQA", True),
        ("Visual7W", True),
        ("ScienceQA", False),
        ("VizWiz", False),
        ("GQA", False),
        ("TextVQA", False),
    ),
    "Retrieval": (
        ("VisDial", True),
        ("CIRR", True),
        ("VisualNews_t2i", True),
        ("VisualNews_i2t", True),
        ("MSCOCO_t2i", True),
        ("MSCOCO_i2t", True),
        ("NIGHTS", True),
        ("WebQA", True),
        ("FashionIQ", False),
        ("Wiki-SS-NQ", False),
        ("OVEN", False),
        ("EDIS", False),
    ),
    "Grounding": (
        ("MSCOCO", True),
        ("RefCOCO", False),
        ("RefCOCO-Matching", False),
        ("Visual7W-Pointing", False),
    ),
}
#: Candidates per query of the classification datasets (class names); the others have 1 positive + 999.
MMEB_CLASS_COUNTS = {
    "ImageNet-1K": 1000,
    "N24News": 24,
    "HatefulMemes": 2,
    "VOC2007": 20,
    "SUN397": 397,
    "Place365": 365,
    "ImageNet-A": 1000,
    "ImageNet-R": 200,
    "ObjectNet": 313,
    "Country211": 211,
}
MMEB_QUERIES = 1000
MMEB_CANDIDATES = 1000

#: Aggregate -> {model: percent}; each aggregate is the mean precision@1 of its datasets.
MMEB_AGGREGATES: dict[str, dict[str, float]] = {
    "Overall": {"UNITE-Instruct 2B": 63.3, "UNITE-Instruct 7B": 70.3, "VLM2Vec 7B": 65.8},
    "Classification": {"UNITE-Instruct 2B": 63.2, "UNITE-Instruct 7B": 68.3, "VLM2Vec 7B": 62.6},
    "VQA": {"UNITE-Instruct 2B": 55.9, "UNITE-Instruct 7B": 65.1, "VLM2Vec 7B": 57.8},
    "Retrieval": {"UNITE-Instruct 2B": 65.4, "UNITE-Instruct 7B": 71.6, "VLM2Vec 7B": 69.9},
    "Grounding": {"UNITE-Instruct 2B": 75.6, "UNITE-Instruct 7B": 84.8, "VLM2Vec 7B": 81.7},
    "IND": {"UNITE-Instruct 2B": 65.8, "UNITE-Instruct 7B": 73.6},
    "OOD": {"UNITE-Instruct 2B": 60.1, "UNITE-Instruct 7B": 66.3},
}


def _mmeb_specs() -> list[TaskSpec]:
    specs = []
    for meta_task, datasets in MMEB_DATASETS.items():
        for dataset, in_distribution in datasets:
            candidates = MMEB_CLASS_COUNTS.get(dataset, MMEB_CANDIDATES)
            specs.append(
                TaskSpec(
                    name=f"MMEB-{dataset}",
                    layout=Layout.MMEB,
                    direction=Direction.ANY,
                    data_dir=MMEB_DATA_DIRS,
                    files=_mmeb_files(dataset),
                    main_metric="precision@1",
                    metrics=("precision@1", *DEFAULT_METRICS),
                    options={"subset": dataset},
                    group=f"MMEB/{meta_task}",
                    tags=("mmeb", "ind" if in_distribution else "ood", meta_task.lower()),
                    source=MMEB_SOURCE,
                    description=(
                        f"MMEB {meta_task}, {dataset}: {MMEB_QUERIES} queries, each ranked against its own "
                        f"{candidates} candidates (the positive first in the file); precision@1. MMEB-V2 files: "
                        "qry_inst is each query's instruction, tgt_inst that of image candidates."
                    ),
                )
            )
    return specs


# ------------------------------------------------------------------------------------- fine-grained, coarse

#: (name, layout, data_dir, files, options, settings, source, {direction: {model: paper R@1}})
_FINE_GRAINED_PAPER = {
    "CaReBench-General": {"t2v": (78.2, 86.1), "v2t": (80.8, 87.0)},
    "CaReBench-Spatial": {"t2v": (79.6, 86.5), "v2t": (77.4, 84.8)},
    "CaReBench-Temporal": {"t2v": (45.3, 52.4), "v2t": (50.0, 55.4)},
    "ShareGPT4V-1K": {"t2i": (89.8, 93.4), "i2t": (86.7, 93.2)},
    "Urban1K": {"t2i": (91.5, 95.4), "i2t": (89.2, 95.6)},
    "DOCCI": {"t2i": (81.4, 87.2), "i2t": (72.3, 85.8)},
}

# Video benchmarks: ``data_dir`` and each ``files`` role list the paths a download plus a plain unzip / untar
# produce first, then the flattened layout earlier docs asked for (docs/reference.md section 10; docs/evaluation.md,
# "Video benchmarks: protocols", cites the reference code of each rule).

# Image benchmarks: ``data_dir`` and each ``files`` role list the paths the official downloads give (as they ship,
# zips included, and after a plain unzip), then the flattened layout earlier docs asked for; docs/evaluation.md,
# "Image benchmarks: protocols", cites the reference code of each rule.

SHAREGPT4V_FILE = "share-captioner_coco_lcs_sam_1246k_1107.json"
KARPATHY_ZIP = "caption_datasets.zip (https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip)"
#: Captions kept per image in Flickr30K and MSCOCO (the first ones in file order), as the common protocol does.
KARPATHY_CAPTIONS_PER_IMAGE = 5


def _karpathy_annotations(name: str) -> tuple[str, ...]:
    """``name`` from caption_datasets.zip: unzipped flat (here, in caption_datasets/, or one level up) or zipped."""
    return tuple(
        f"{up}{folder}{name}" for up in ("", "../") for folder in ("", "caption_datasets/", "caption_datasets.zip/")
    )


_CAREBENCH_SOURCE = (
    "Hugging Face dataset MCG-NJU/CaReBench, downloaded with its folders into DATA_ROOT/CaReBench/ (e.g. "
    "`huggingface-cli download MCG-NJU/CaReBench --repo-type dataset --local-dir DATA_ROOT/CaReBench`): "
    "json/metadata.json (1000 records: video, caption, spatial_caption, temporal_caption, category, subcategory) "
    "and videos/videos.zip (the 1000 mp4 files, about 3.9 GB), which is extracted once on first use. General, "
    "Spatial and Temporal read caption, spatial_caption and temporal_caption; 32 frames per video."
)
_CAREBENCH_FILES = {
    "annotations": ("json/metadata.json", "metadata.json"),
    "media": ("videos/videos.zip", "videos.zip", "videos"),
}
_PAIR_BENCHMARKS: list[dict] = [
    *(
        {
            "name": f"CaReBench-{aspect}",
            "layout": Layout.CAREBENCH,
            "data_dir": ("CaReBench", "carebench"),
            "media": "video",
            "files": _CAREBENCH_FILES,
            "options": {"caption_key": key},
            "settings": {"video_frames": CAREBENCH_FRAMES},
            "group": "Fine-grained video",
            "source": _CAREBENCH_SOURCE,
        }
        for aspect, key in (("General", "caption"), ("Spatial", "spatial_caption"), ("Temporal", "temporal_caption"))
    ),
    {
        "name": "ShareGPT4V-1K",
        "layout": Layout.SHAREGPT4V,
        "data_dir": ("ShareGPT4V", "sharegpt4v"),
        "media": "image",
        "files": {
            "annotations": tuple(
                f"{where}{SHAREGPT4V_FILE}" for where in ("", "sharegpt4v/", "data/", "data/sharegpt4v/")
            ),
            "media": ("", "data", ".."),
        },
        "options": {"count": 1000, "caption_rule": "newlines_to_spaces"},
        "group": "Fine-grained image",
        "source": "ShareGPT4V-1K as Long-CLIP evaluates it (train/sharegpt4v.py, share4v_val_dataset): the first "
        f"1000 records of {SHAREGPT4V_FILE} (Hugging Face Lin-Chen/ShareGPT4V: `huggingface-cli download "
        f"Lin-Chen/ShareGPT4V {SHAREGPT4V_FILE} --repo-type dataset --local-dir DATA_ROOT/ShareGPT4V`), each caption "
        "the record's gpt turn with line breaks as spaces, each image the path its 'image' field names "
        "(coco/train2017/..., llava/llava_pretrain/images/..., sam/images/...) under the ShareGPT4V data folder as "
        "ShareGPT4V's docs/Data.md lays it out: DATA_ROOT/ShareGPT4V/ itself, or its data/ (the JSON may also lie "
        "in data/ or data/sharegpt4v/).",
    },
    {
        "name": "Urban1K",
        "layout": Layout.CAPTION_FOLDER,
        "data_dir": ("Urban1k", "Urban1K", "."),
        "media": "image",
        "files": {
            "captions": ("caption", "Urban1k/caption", "Urban1k.zip/Urban1k/caption"),
            "media": ("image", "Urban1k/image", "Urban1k.zip/Urban1k/image"),
        },
        "options": {"caption_rule": "first_line"},
        "group": "Fine-grained image",
        "source": "Urban1k from Long-CLIP: Urban1k.zip of Hugging Face BeichenZhang/Urban1k (`huggingface-cli "
        "download BeichenZhang/Urban1k Urban1k.zip --repo-type dataset --local-dir DATA_ROOT`), unzipped where it "
        "lies (`unzip Urban1k.zip` gives Urban1k/image/<name>.jpg and Urban1k/caption/<name>.txt, 1000 each) or "
        "left zipped (extracted once on first use); DATA_ROOT/Urban1k/Urban1k.zip and its unzipped tree work too. "
        "Each caption is the first line of its file, as Long-CLIP's eval/retrieval/Urban1k.py reads it.",
    },
    {
        "name": "DOCCI",
        "layout": Layout.DOCCI,
        "data_dir": ("DOCCI", "docci", "."),
        "media": "image",
        "files": {
            "annotations": ("docci_descriptions.jsonlines",),
            "media": ("images", "docci_images/images", "docci_images"),
        },
        "options": {"split": "test", "caption_rule": "whole"},
        "group": "Fine-grained image",
        "source": "DOCCI (https://google.github.io/docci/#downloads) in DATA_ROOT/DOCCI/: "
        "docci_descriptions.jsonlines (https://storage.googleapis.com/docci/data/docci_descriptions.jsonlines) and "
        "docci_images.tar.gz (https://storage.googleapis.com/docci/data/docci_images.tar.gz, 7.1 GB) untarred "
        "beside it (`tar -xzf docci_images.tar.gz` gives images/<image_file>): the 5000 records of split test, "
        "each image with its whole description.",
    },
    {
        "name": "Flickr30K",
        "layout": Layout.KARPATHY,
        "data_dir": ("flickr30k", "Flickr30k", "Flickr30K", "."),
        "media": "image",
        "files": {
            "annotations": _karpathy_annotations("dataset_flickr30k.json"),
            "media": (
                "flickr30k-images",
                "flickr30k-images.zip/flickr30k-images",
                "flickr30k-images.zip",
                "flickr30k-images/flickr30k-images",
                "flickr30k_images/flickr30k_images",
                "flickr30k_images",
                "images",
                "",
            ),
        },
        "options": {"split": "test", "captions_per_item": KARPATHY_CAPTIONS_PER_IMAGE},
        "group": "Coarse image",
        "source": f"Karpathy's split: dataset_flickr30k.json from {KARPATHY_ZIP} and the Flickr30k images "
        "(flickr30k-images/ of the official flickr30k-images.tar.gz, or Hugging Face nlphuji/flickr30k's "
        "flickr30k-images.zip, read zipped or unzipped), in DATA_ROOT/flickr30k/ (caption_datasets.zip or its JSON "
        "files may also lie in DATA_ROOT or DATA_ROOT/caption_datasets/): the 1000 test images with the first 5 "
        "sentences of each (5000 text queries).",
    },
    {
        "name": "MSCOCO-5K",
        "layout": Layout.KARPATHY,
        "data_dir": ("coco", "COCO", "mscoco", "MSCOCO", "."),
        "media": "image",
        "files": {
            "annotations": _karpathy_annotations("dataset_coco.json"),
            "media": ("", "images", "val2014.zip", "images/val2014.zip"),
        },
        "options": {"split": "test", "captions_per_item": KARPATHY_CAPTIONS_PER_IMAGE},
        "group": "Coarse image",
        "source": f"Karpathy's split: dataset_coco.json from {KARPATHY_ZIP} and COCO's val2014.zip "
        "(http://images.cocodataset.org/zips/val2014.zip; unzipped it gives val2014/, the records' 'filepath'), "
        "read zipped or unzipped, in DATA_ROOT/coco/ (images/val2014/ is found too; caption_datasets.zip or its "
        "JSON files may also lie in DATA_ROOT or DATA_ROOT/caption_datasets/): the 5000 test images with the "
        "first 5 sentences of each in file order (25,000 text queries; some images have 6 or 7).",
    },
    {
        "name": "MSRVTT-1K-A",
        "layout": Layout.MSRVTT,
        "data_dir": ("msrvtt", "."),
        "media": "video",
        "files": {
            "annotations": (
                "msrvtt_data/MSRVTT_JSFUSION_test.csv",
                "MSRVTT/msrvtt_data/MSRVTT_JSFUSION_test.csv",
                "MSRVTT_JSFUSION_test.csv",
                "msrvtt_data.zip/msrvtt_data/MSRVTT_JSFUSION_test.csv",
            ),
            "media": ("MSRVTT/videos/all", "videos/all", "videos", "MSRVTT_Videos", "MSRVTT.zip/MSRVTT/videos/all"),
        },
        "options": {"v2t": "max_over_captions"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "MSR-VTT 1k-A, the JSFusion test split: CLIP4Clip's msrvtt_data.zip "
        "(https://github.com/ArrowLuo/CLIP4Clip/releases/download/v0.0/msrvtt_data.zip) and Frozen-in-Time's "
        "MSRVTT.zip (https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip), both unzipped in "
        "DATA_ROOT/msrvtt/ (or in DATA_ROOT itself): msrvtt_data/MSRVTT_JSFUSION_test.csv (1000 sentences, one "
        "per video) and MSRVTT/videos/all/<video_id>.mp4 (a zip left unzipped is extracted once on first use). 48 "
        "frames per video.",
    },
    {
        "name": "MSVD",
        "layout": Layout.MSVD,
        "data_dir": ("msvd", "MSVD"),
        "media": "video",
        "files": {
            "split": ("msvd_data/test_list.txt", "test_list.txt", "msvd_data.zip/msvd_data/test_list.txt"),
            "annotations": (
                "msvd_data/raw-captions.pkl",
                "raw-captions.pkl",
                "msvd_data.zip/msvd_data/raw-captions.pkl",
            ),
            "media": ("YouTubeClips", "MSVD_Videos", "videos"),
        },
        "options": {"v2t": "max_over_captions"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "MSVD as CLIP4Clip evaluates it: CLIP4Clip's msvd_data.zip "
        "(https://github.com/ArrowLuo/CLIP4Clip/releases/download/v0.0/msvd_data.zip) unzipped and the raw "
        "videos YouTubeClips.tar (https://www.cs.utexas.edu/users/ml/clamp/videoDescription/) untarred, both in "
        "DATA_ROOT/msvd/: msvd_data/test_list.txt (670 videos), msvd_data/raw-captions.pkl (all their captions) "
        "and YouTubeClips/<id>.avi. V2T ranks videos, each by the best of its captions. 48 frames per video.",
    },
    {
        "name": "DiDeMo",
        "layout": Layout.DIDEMO,
        "data_dir": ("didemo", "DiDeMo", "LocalizingMoments"),
        "media": "video",
        "files": {
            "annotations": (
                "test_data.json",
                "data/test_data.json",
                "didemo_ret_test.json",
                "anno_downstream/didemo_ret_test.json",
            ),
            "split": ("test_list.txt", "data/test_list.txt"),
            "media": ("videos", "DiDeMo_Videos", "didemo_videos"),
        },
        "options": {"trim_seconds": DIDEMO_TRIM_SECONDS, "missing_media": "drop", "v2t": "max_over_captions"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "DiDeMo test set, paragraph to video: LocalizingMoments' data/test_data.json "
        "(https://github.com/LisaAnne/LocalizingMoments) and collaborative-experts' test_list.txt "
        "(misc/datasets/didemo/test_list.txt of https://github.com/albanie/collaborative-experts: the 1004 test "
        "videos CLIP4Clip uses) in DATA_ROOT/didemo/, the videos in DATA_ROOT/didemo/videos/ "
        "(LocalizingMoments' download_videos_AWS.py --video_directory videos writes <video>.mp4; original "
        "names, other extensions and subfolders are found too). UMT's / CaReBench's didemo_ret_test.json may "
        "replace test_data.json. Each video's descriptions are joined into one query; frames come from its first "
        "30 s; videos that cannot be found are left out and counted. 48 frames per video.",
    },
]


def _pair_specs() -> list[TaskSpec]:
    specs = []
    for bench in _PAIR_BENCHMARKS:
        media = bench["media"]
        directions = (
            (Direction.TEXT_TO_IMAGE, Direction.IMAGE_TO_TEXT)
            if media == "image"
            else (Direction.TEXT_TO_VIDEO, Direction.VIDEO_TO_TEXT)
        )
        for direction in directions:
            numbers = _FINE_GRAINED_PAPER.get(bench["name"], {}).get(direction.value)
            paper = {"UNITE 2B": numbers[0], "UNITE 7B": numbers[1]} if numbers else {}
            specs.append(
                TaskSpec(
                    name=f"{bench['name']}-{direction.value.upper()}",
                    layout=bench["layout"],
                    direction=direction,
                    data_dir=bench["data_dir"],
                    files=bench.get("files", {}),
                    options=bench.get("options", {}),
                    settings=bench.get("settings", {}),
                    main_metric="recall@1",
                    group=bench["group"],
                    tags=("paper", bench["group"].split()[0].lower()),
                    paper=paper,
                    source=bench["source"],
                    description=f"{bench['name']} {direction.value.upper()}: R@1"
                    + (" (paper values read off its chart, about +-0.5)" if paper else ""),
                )
            )
    return specs


def _covr_spec() -> TaskSpec:
    return TaskSpec(
        name="WebVid-CoVR",
        layout=Layout.WEBVID_COVR,
        direction=Direction.COMPOSED,
        data_dir=("WebVid-CoVR", "CoVR"),
        files={
            "annotations": ("annotation/webvid-covr/webvid8m-covr_test.csv", "webvid8m-covr_test.csv"),
            "media": ("datasets/WebVid/8M/train", "WebVid/8M/train", "videos"),
        },
        options={"remove_self_similarity": True},
        settings={"video_frames": WEBVID_COVR_FRAMES},
        main_metric="recall@1",
        group="Composed video",
        tags=("paper",),
        paper={"UNITE-Instruct 2B": 69.1, "UNITE-Instruct 7B": 72.5},
        source="WebVid-CoVR test split, laid out as the CoVR code downloads it (https://github.com/lucas-ventura/"
        "CoVR), run in DATA_ROOT/WebVid-CoVR/ (or in a CoVR checkout at DATA_ROOT/CoVR/): `bash "
        "tools/scripts/download_annotation.sh covr` writes "
        "annotation/webvid-covr/webvid8m-covr_test.csv (also on Hugging Face lucas-ventura/WebVid-CoVR) and "
        "`python tools/scripts/download_covr.py --split test` writes datasets/WebVid/8M/train/<pth>.mp4 (pth1 and "
        "pth2 of each row). 16 frames per video.",
        description="Composed video retrieval: source video + edit text to the target video, among all test targets; "
        "a query never ranks its own source video (CoVR's remove_self_similarity).",
    )


REGISTRY: dict[str, TaskSpec] = {spec.name: spec for spec in [*_mmeb_specs(), *_pair_specs(), _covr_spec()]}

GROUPS: dict[str, tuple[str, ...]] = {
    "mmeb": tuple(name for name, spec in REGISTRY.items() if "mmeb" in spec.tags),
    "mmeb-ind": tuple(name for name, spec in REGISTRY.items() if "ind" in spec.tags),
    "mmeb-ood": tuple(name for name, spec in REGISTRY.items() if "ood" in spec.tags),
    **{
        f"mmeb-{meta.lower()}": tuple(name for name, spec in REGISTRY.items() if spec.group == f"MMEB/{meta}")
        for meta in MMEB_DATASETS
    },
    "fine-grained": tuple(name for name, spec in REGISTRY.items() if spec.group.startswith("Fine-grained")),
    "coarse": tuple(name for name, spec in REGISTRY.items() if spec.group.startswith("Coarse")),
    "paper": tuple(REGISTRY),
}


def get_task(name: str) -> TaskSpec:
    """The registered spec called ``name`` (case-insensitive).

    Raises:
        ConfigError: no such task.
    """
    lowered = {key.lower(): spec for key, spec in REGISTRY.items()}
    if name.lower() not in lowered:
        raise ConfigError(f"unknown task {name!r}; see `unite eval --list-tasks` for the registered names and groups")
    return lowered[name.lower()]


def resolve_task_names(name: str) -> list[TaskSpec]:
    """A registered task or group name (``mmeb``, ``fine-grained``, ``coarse``, ``paper``, ...) to specs."""
    if name.lower() in GROUPS:
        return [REGISTRY[member] for member in GROUPS[name.lower()]]
    return [get_task(name)]
