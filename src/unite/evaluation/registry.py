"""The benchmarks the UNITE paper reports, as :class:`TaskSpec` data, with the paper's numbers.

Numbers and protocols: REFERENCE.md section 6 (frame counts: section 4). Data cannot be bundled; each spec's
``source`` says where the public files come from, and ``data_dir`` / ``files`` where they go under the data
root (``--data-root`` or ``UNITE_EVAL_DATA``). Paper values are percentages of the main metric.
"""

from __future__ import annotations

from unite.errors import ConfigError
from unite.evaluation.metrics import DEFAULT_METRICS
from unite.evaluation.tasks import Direction, Layout, TaskSpec

__all__ = ["GROUPS", "MMEB_AGGREGATES", "REGISTRY", "get_task", "resolve_task_names"]

#: Frame counts the paper evaluated with (REFERENCE.md section 4).
MSRVTT_MSVD_DIDEMO_FRAMES = 48
CAREBENCH_FRAMES = 32
WEBVID_COVR_FRAMES = 16

# ------------------------------------------------------------------------------------------------------ MMEB

MMEB_SOURCE = (
    "Hugging Face dataset TIGER-Lab/MMEB-eval: put each subset's test file at MMEB-eval/<subset>/"
    "test-00000-of-00001.parquet (or a .jsonl export at MMEB-eval/<subset>.jsonl) and unzip the images to "
    "MMEB-eval/eval_images/ so that qry_img_path and tgt_img_path resolve against it."
)
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
                    data_dir="MMEB-eval",
                    main_metric="precision@1",
                    metrics=("precision@1", *DEFAULT_METRICS),
                    options={"subset": dataset, "image_root": "eval_images"},
                    group=f"MMEB/{meta_task}",
                    tags=("mmeb", "ind" if in_distribution else "ood", meta_task.lower()),
                    source=MMEB_SOURCE,
                    description=(
                        f"MMEB {meta_task}, {dataset}: {MMEB_QUERIES} queries, each ranked against its own "
                        f"{candidates} candidates (the positive first in the file); precision@1."
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

_CAREBENCH_SOURCE = (
    "Hugging Face dataset MCG-NJU/CaReBench: json/metadata.json (records with 'video' and the general, spatial "
    "and temporal captions) and videos/ under CaReBench/; check options.caption_key against the download."
)
_PAIR_BENCHMARKS: list[dict] = [
    *(
        {
            "name": f"CaReBench-{aspect}",
            "layout": Layout.CAREBENCH,
            "data_dir": "CaReBench",
            "media": "video",
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
        "data_dir": "ShareGPT4V",
        "media": "image",
        "options": {"count": 1000},
        "group": "Fine-grained image",
        "source": "ShareGPT4V share-captioner_coco_lcs_sam_1246k_1107.json (the first 1000 records, as Long-CLIP "
        "evaluates) with its images under ShareGPT4V/ as the records' 'image' paths name them.",
    },
    {
        "name": "Urban1K",
        "layout": Layout.CAPTION_FOLDER,
        "data_dir": "Urban1k",
        "media": "image",
        "group": "Fine-grained image",
        "source": "Urban1k from Long-CLIP (Hugging Face BeichenZhang/Urban1k): Urban1k/image/*.jpg and "
        "Urban1k/caption/*.txt with the same names.",
    },
    {
        "name": "DOCCI",
        "layout": Layout.DOCCI,
        "data_dir": "DOCCI",
        "media": "image",
        "options": {"split": "test"},
        "group": "Fine-grained image",
        "source": "DOCCI (google/docci): docci_descriptions.jsonlines and images/ under DOCCI/; the test split.",
    },
    {
        "name": "Flickr30K",
        "layout": Layout.KARPATHY,
        "data_dir": "flickr30k",
        "media": "image",
        "files": {"annotations": "dataset_flickr30k.json", "media": "flickr30k-images"},
        "options": {"split": "test"},
        "group": "Coarse image",
        "source": "Karpathy split dataset_flickr30k.json and flickr30k-images/ under flickr30k/ (1000 test images, "
        "5 captions each).",
    },
    {
        "name": "MSCOCO-5K",
        "layout": Layout.KARPATHY,
        "data_dir": "coco",
        "media": "image",
        "files": {"annotations": "dataset_coco.json", "media": ""},
        "options": {"split": "test"},
        "group": "Coarse image",
        "source": "Karpathy split dataset_coco.json under coco/, images at coco/<filepath>/<filename> "
        "(val2014/; 5000 test images, 5 captions each).",
    },
    {
        "name": "MSRVTT-1K-A",
        "layout": Layout.MSRVTT,
        "data_dir": "msrvtt",
        "media": "video",
        "files": {"annotations": "MSRVTT_JSFUSION_test.csv", "media": "videos"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "MSR-VTT 1k-A (JSFusion split as CLIP4Clip ships it): MSRVTT_JSFUSION_test.csv and "
        "videos/<video_id>.mp4 under msrvtt/.",
    },
    {
        "name": "MSVD",
        "layout": Layout.MSVD,
        "data_dir": "msvd",
        "media": "video",
        "files": {"split": "test_list.txt", "annotations": "raw-captions.pkl", "media": "YouTubeClips"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "MSVD as CLIP4Clip ships it: test_list.txt, raw-captions.pkl and YouTubeClips/<id>.avi under "
        "msvd/ (670 test videos, all their captions).",
    },
    {
        "name": "DiDeMo",
        "layout": Layout.DIDEMO,
        "data_dir": "didemo",
        "media": "video",
        "files": {"annotations": "test_data.json", "media": "videos"},
        "settings": {"video_frames": MSRVTT_MSVD_DIDEMO_FRAMES},
        "group": "Coarse video",
        "source": "DiDeMo test_data.json (records with 'video' and 'description') and videos/ under didemo/; "
        "paragraph-to-video: each video's descriptions joined, as CLIP4Clip evaluates.",
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
        data_dir="WebVid-CoVR",
        files={"annotations": "webvid8m-covr_test.csv", "media": "videos"},
        settings={"video_frames": WEBVID_COVR_FRAMES},
        main_metric="recall@1",
        group="Composed video",
        tags=("paper",),
        paper={"UNITE-Instruct 2B": 69.1, "UNITE-Instruct 7B": 72.5},
        source="WebVid-CoVR test split (CoVR project): webvid8m-covr_test.csv (pth1, pth2, edit) and "
        "videos/<pth>.mp4 under WebVid-CoVR/.",
        description="Composed video retrieval: source video + edit text to the target video, among all test targets.",
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
