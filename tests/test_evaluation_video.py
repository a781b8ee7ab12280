"""The video benchmarks as users download them, scored by their published protocols.

Replicas of each download (:mod:`unite.evaluation.synthetic`: real file names, columns, keys, nesting and zips)
load and run end to end on the tiny checkpoint. The protocol rules are checked on hand-built score cases whose
expected values follow from the rules: CoVR's self-similarity removal (``src/test/blip2/webvid_covr.py``),
CLIP4Clip's video-to-text over videos (``metrics.py: tensor_video_to_text_sim``), DiDeMo's first 30 seconds
(CaReBench ``trim30``) and its dropped videos (CLIP4Clip ``dataloader_didemo_retrieval.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import unite.data.media as media
from unite.cli.main import main
from unite.errors import ConfigError
from unite.evaluation import REGISTRY, EvalConfig, evaluate_task, load_task_data
from unite.evaluation import loaders as loaders_module
from unite.evaluation.harness import load_tasks
from unite.evaluation.loaders import Pair, pairs_to_task
from unite.evaluation.locate import EXTRACT_DIR_ENV
from unite.evaluation.synthetic import CLIP_FRAMES, build_stand_in, caption, covr_path, didemo_video_name
from unite.settings import EncodingSettings
from unite.testing import frame_level, make_video
from unite.types import VideoClip

#: Every registered video task, by benchmark (the tasks of one benchmark share its data folder).
VIDEO_BENCHMARKS = {
    "msrvtt": ("MSRVTT-1K-A-T2V", "MSRVTT-1K-A-V2T"),
    "msvd": ("MSVD-T2V", "MSVD-V2T"),
    "didemo": ("DiDeMo-T2V", "DiDeMo-V2T"),
    "carebench": tuple(f"CaReBench-{a}-{d}" for a in ("General", "Spatial", "Temporal") for d in ("T2V", "V2T")),
    "covr": ("WebVid-CoVR",),
}
VIDEO_TASKS = [name for names in VIDEO_BENCHMARKS.values() for name in names]


@pytest.fixture(autouse=True)
def extract_dir(tmp_path, monkeypatch) -> Path:
    """Zips are extracted under the test's folder, never into the user's cache."""
    folder = tmp_path / "extracted"
    monkeypatch.setenv(EXTRACT_DIR_ENV, str(folder))
    return folder


def _replicas(root: Path, count: int = 3) -> Path:
    for names in VIDEO_BENCHMARKS.values():
        build_stand_in(REGISTRY[names[0]], root, count=count)
    return root


class Table:
    """An encoder whose embedding of an item is looked up: by its text, else by its video file's name."""

    settings = EncodingSettings()
    name_or_path = "table"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, vectors: dict[str, list[float]], dim: int = 8) -> None:
        self.vectors, self.embedding_dim = vectors, dim
        self.model = torch.nn.Linear(2, 2)
        self.model.config = type("Config", (), {"_attn_implementation": "none"})()

    def key(self, item) -> str:
        if item.text:
            return item.text
        video = item.videos[0]
        return Path(video.path if isinstance(video, VideoClip) else video).name

    def encode(self, items, **kwargs):
        out = np.zeros((len(items), self.embedding_dim), dtype=np.float32)
        for row, item in enumerate(items):
            vector = self.vectors[self.key(item)]
            out[row, : len(vector)] = vector
        return out


#: Small processor-stage frames: the frame counts under test stay the protocol's, the pixels per frame shrink.
_SMALL_FRAMES = {"image_min_pixels": 4 * 28 * 28, "image_max_pixels": 16 * 28 * 28}


def _run(encoder, spec, data) -> dict:
    """Evaluate with a lookup encoder (which has no pixel pipeline, so the task's media settings are left out)."""
    return evaluate_task(encoder, spec.replace(settings={}), data, EvalConfig(show_progress=False))


# -------------------------------------------------------------------------------------- protocols, by hand


def test_covr_never_ranks_a_querys_own_source_video(tmp_path):
    """CoVR's TestWebVidCoVR(remove_self_similarity=True) scores a query's source video -10 wherever it is also
    a target. In the replica, query 1's source video is query 0's target; here query 1 resembles its source
    (0.95) more than its target (0.8): ranked, the source comes first (rank 2); excluded, the target does."""
    spec = REGISTRY["WebVid-CoVR"]
    assert spec.options["remove_self_similarity"] is True
    build_stand_in(spec, tmp_path, count=3)
    data = load_task_data(spec, tmp_path / "WebVid-CoVR")
    target0 = f"video:{covr_path(0, 'tgt')}"
    assert data.excluded == {"q1": [target0]}  # the source of q1 is the target of q0
    vectors = {
        "make it red": [1, 0, 0],
        "make it blue": [0.95, 0.8, 0.1],
        "make it green": [0, 0, 1],
        **{f"{Path(covr_path(i, 'tgt')).name}.mp4": np.eye(3)[i].tolist() for i in range(3)},
    }
    excluded = _run(Table(vectors), spec, data)
    assert excluded["metrics"]["recall@1"] == 1.0 and excluded["metrics"]["median_rank"] == 1.0
    ranking_it = spec.replace(options={"remove_self_similarity": False})
    ranked = _run(Table(vectors), ranking_it, load_task_data(ranking_it, tmp_path / "WebVid-CoVR"))
    assert ranked["metrics"]["recall@1"] == pytest.approx(2 / 3)
    assert ranked["metrics"]["mrr@10"] == pytest.approx((1 + 1 / 2 + 1) / 3)


def test_exclusions_apply_to_per_query_pools_too():
    """The same rule on pooled candidates (MMEB-style): the excluded candidate leaves the query's ranking."""
    from unite.evaluation.loaders import Entry, TaskData
    from unite.types import Item

    queries = [Entry("q", Item(text="q"))]
    corpus = [Entry(name, Item(text=name)) for name in ("own", "target", "other")]
    data = TaskData(
        queries, corpus, {"q": {"target": 1}}, pools={"q": ["own", "target", "other"]}, excluded={"q": ["own"]}
    ).validate()
    vectors = {"q": [1, 0], "own": [1, 0], "target": [0.5, 0], "other": [0.1, 0]}
    assert _run(Table(vectors), REGISTRY["WebVid-CoVR"], data)["metrics"]["recall@1"] == 1.0
    ranked = _run(Table(vectors), REGISTRY["WebVid-CoVR"], TaskData(queries, corpus, data.qrels, data.pools))
    assert ranked["metrics"]["recall@1"] == 0.0


def test_an_exclusion_cannot_remove_a_relevant_candidate():
    from unite.evaluation.loaders import Entry, TaskData
    from unite.types import Item

    data = TaskData([Entry("q", Item(text="q"))], [Entry("c", Item(text="c"))], {"q": {"c": 1}}, excluded={"q": ["c"]})
    with pytest.raises(ConfigError, match="excludes 'c', which it judges relevant"):
        data.validate()


#: Video 0's own caption scores 0.6 for it; video 1's five captions 0.90 to 0.86; video 2's caption 0.1.
_CAPTIONS = {
    "v0.mp4": ("own caption of video 0",),
    "v1.mp4": tuple(f"caption {k} of video 1" for k in range(5)),
    "v2.mp4": ("own caption of video 2",),
}


def _caption_vectors() -> dict[str, list[float]]:
    vectors = {"v0.mp4": [1, 0, 0], "v1.mp4": [0, 1, 0], "v2.mp4": [0, 0, 1], "own caption of video 0": [0.6, 0, 0]}
    vectors.update({f"caption {k} of video 1": [0.9 - 0.01 * k, 1, 0] for k in range(5)})
    vectors["own caption of video 2"] = [0.1, 0, 1]
    return vectors


def _msvd_like(spec) -> object:
    pairs = [Pair(name.split(".")[0], f"/nowhere/{name}", texts) for name, texts in _CAPTIONS.items()]
    return pairs_to_task(pairs, spec, "hand-built").validate()


def test_v2t_ranks_videos_by_their_best_caption_as_clip4clip():
    """CLIP4Clip (multi_sentence: tensor_video_to_text_sim) ranks videos, each scored by the max over its
    captions. Video 0 finds its caption at rank 6 among captions (five captions of video 1 score higher) but at
    rank 2 among videos: R@1 agrees (2/3), R@5 does not (2/3 by captions, 1 by videos)."""
    spec = REGISTRY["MSVD-V2T"]
    assert spec.options["v2t"] == "max_over_captions"
    grouped = _run(Table(_caption_vectors()), spec, _msvd_like(spec))
    metrics = grouped["metrics"]
    assert metrics["recall@1"] == pytest.approx(2 / 3) and metrics["recall@5"] == 1.0
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert metrics["ndcg@10"] == pytest.approx((1 / np.log2(3) + 2) / 3)
    assert grouped["diagnostics"]["rank_distribution"]["mean"] == pytest.approx((2 + 1 + 1) / 3)
    assert grouped["counts"]["candidates_per_query"] == 3  # three videos, seven captions
    by_caption = spec.replace(options={"v2t": "any_caption"})
    metrics = _run(Table(_caption_vectors()), by_caption, _msvd_like(by_caption))["metrics"]
    assert metrics["recall@1"] == pytest.approx(2 / 3) and metrics["recall@5"] == pytest.approx(2 / 3)
    assert metrics["recall@10"] == 1.0 and metrics["ndcg@10"] == pytest.approx((1 / np.log2(7) + 2) / 3)


def test_t2v_ranks_videos_for_each_caption():
    """Text to video: every caption is a query whose one relevant candidate is its video. Video 1's captions
    score 1 with it and 0.9 down to 0.86 with video 0, so all five find it first; video 0's caption scores 0.6
    with video 0 and 0 elsewhere; video 2's caption 1 with video 2 and 0.1 with video 0."""
    spec = REGISTRY["MSVD-T2V"]
    data = _msvd_like(spec)
    assert len(data.queries) == 7 and len(data.corpus) == 3 and all(len(j) == 1 for j in data.qrels.values())
    result = _run(Table(_caption_vectors()), spec, data)
    assert result["metrics"]["recall@1"] == 1.0 and result["counts"]["candidates_per_query"] == 3


def test_msrvtt_1k_a_scores_both_directions_as_clip4clip(tmp_path):
    """JSFusion 1k-A holds one sentence per video, so CLIP4Clip scores T2V on the sentence x video matrix and V2T
    on its transpose (compute_metrics(sim.T)). With sim = [[.9, .1, .2], [.3, .8, .7], [.1, .95, .5]]: T2V ranks
    1, 1, 2 (R@1 2/3); V2T ranks 1, 2, 2 (R@1 1/3, median 2)."""
    build_stand_in(REGISTRY["MSRVTT-1K-A-T2V"], tmp_path, count=3)
    sim = [[0.9, 0.1, 0.2], [0.3, 0.8, 0.7], [0.1, 0.95, 0.5]]
    vectors = {caption(i): sim[i] for i in range(3)}
    vectors.update({f"video{7000 + j}.mp4": np.eye(3)[j].tolist() for j in range(3)})
    outcomes = {}
    for name in ("MSRVTT-1K-A-T2V", "MSRVTT-1K-A-V2T"):
        spec = REGISTRY[name]
        data = load_task_data(spec, tmp_path / "msrvtt")
        assert len(data.queries) == len(data.corpus) == 3  # one sentence per video
        outcomes[name] = _run(Table(vectors), spec, data)["metrics"]
    assert outcomes["MSRVTT-1K-A-T2V"]["recall@1"] == pytest.approx(2 / 3)
    assert outcomes["MSRVTT-1K-A-T2V"]["median_rank"] == 1.0
    assert outcomes["MSRVTT-1K-A-V2T"]["recall@1"] == pytest.approx(1 / 3)
    assert outcomes["MSRVTT-1K-A-V2T"]["median_rank"] == 2.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"v2t": "best"}, r"options\.v2t must be one of any_caption, max_over_captions"),
        ({"trim_seconds": 0}, r"options\.trim_seconds must be a positive number"),
        ({"trim_seconds": "30"}, r"options\.trim_seconds must be a positive number"),
    ],
)
def test_bad_protocol_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        _msvd_like(REGISTRY["MSVD-V2T"].replace(options=options))


def test_image_tasks_refuse_video_options():
    with pytest.raises(ConfigError, match="trim_seconds applies to video tasks"):
        pairs_to_task([Pair("a", "a.jpg", ("x",))], REGISTRY["Urban1K-T2I"].replace(options={"trim_seconds": 3}), "")


def test_covr_option_must_be_a_flag(tmp_path):
    spec = REGISTRY["WebVid-CoVR"].replace(options={"remove_self_similarity": "yes"})
    build_stand_in(spec, tmp_path, count=2)
    with pytest.raises(ConfigError, match=r"options\.remove_self_similarity must be true or false"):
        load_task_data(spec, tmp_path / "WebVid-CoVR")


# ------------------------------------------------------------------------------------ layouts as downloaded


#: Per benchmark: a media path the replica's download layout holds, and (texts, videos) the test split keeps.
_DOWNLOADED = {
    "msrvtt": ("msrvtt/MSRVTT/videos/all/video7000.mp4", 3, 3),
    "msvd": ("msvd/YouTubeClips/clip_0_5_10.avi", 6, 3),  # two captions per video
    "didemo": (f"didemo/videos/{didemo_video_name(0)}.mp4", 3, 3),  # the fourth video is outside test_list.txt
    "carebench": ("videos/v_00000030_0.mp4", 3, 3),  # inside the extracted videos.zip
    "covr": (f"WebVid-CoVR/datasets/WebVid/8M/train/{covr_path(0, 'src')}.mp4", 3, 3),
}


@pytest.mark.parametrize(("benchmark", "name"), [(b, n) for b, names in VIDEO_BENCHMARKS.items() for n in names])
def test_each_video_task_reads_its_download_as_unpacked(tmp_path, extract_dir, benchmark, name):
    """The replica holds the files where the downloads put them; the loader finds them without flattening."""
    spec = REGISTRY[name]
    build_stand_in(spec, tmp_path, count=3)
    (loaded,) = load_tasks([name], tmp_path)
    path, texts, videos = _DOWNLOADED[benchmark]
    data = loaded.data
    if spec.direction.text_queries:
        assert (len(data.queries), len(data.corpus)) == (texts, videos)
    elif benchmark != "covr":
        assert (len(data.corpus), len(data.queries)) == (texts, videos)
    else:
        assert len(data.queries) == texts and len(data.corpus) == videos
    assert any(p.endswith(path) for p in data.media_paths()), data.media_paths()
    if benchmark == "carebench":  # the zip was extracted once, into UNITE_EXTRACT_DIR
        assert all(p.startswith(str(extract_dir)) for p in data.media_paths())
        assert not list((tmp_path / "CaReBench" / "videos").glob("*.mp4"))


def _flatten(root: Path) -> None:
    """Rearrange the replicas into the flattened layout the docs used to ask for."""
    moves = {
        "msrvtt": [
            ("msrvtt_data/MSRVTT_JSFUSION_test.csv", "MSRVTT_JSFUSION_test.csv"),
            ("MSRVTT/videos/all", "videos"),
        ],
        "msvd": [("msvd_data/test_list.txt", "test_list.txt"), ("msvd_data/raw-captions.pkl", "raw-captions.pkl")],
        "WebVid-CoVR": [
            ("annotation/webvid-covr/webvid8m-covr_test.csv", "webvid8m-covr_test.csv"),
            ("datasets/WebVid/8M/train", "videos"),
        ],
    }
    for folder, pairs in moves.items():
        for old, new in pairs:
            shutil.move(str(root / folder / old), str(root / folder / new))
    for name in ("msrvtt_data", "MSRVTT", "msvd_data", "annotation", "datasets"):
        for parent in ("msrvtt", "msvd", "WebVid-CoVR"):
            shutil.rmtree(root / parent / name, ignore_errors=True)
    carebench = root / "CaReBench" / "videos"
    shutil.unpack_archive(carebench / "videos.zip", root / "unpacked")
    (carebench / "videos.zip").unlink()
    for clip in (root / "unpacked" / "videos").glob("*.mp4"):
        shutil.move(str(clip), str(carebench / clip.name))
    (root / "didemo" / "test_list.txt").unlink()  # the old layout had no split file: every annotated video
    for clip in (root / "didemo" / "videos").glob("*.mp4"):
        clip.rename(clip.with_name(clip.name.removesuffix(".mp4")))  # original Flickr names


def test_the_flattened_layout_still_loads(tmp_path):
    root = _replicas(tmp_path / "data")
    _flatten(root)
    loaded = {task.spec.name: task.data for task in load_tasks(VIDEO_TASKS, root)}
    assert len(loaded["MSRVTT-1K-A-T2V"].queries) == 3 and len(loaded["MSVD-V2T"].corpus) == 6
    assert len(loaded["DiDeMo-T2V"].queries) == 4  # without test_list.txt, every annotated video
    assert loaded["CaReBench-General-T2V"].corpus[0].item.videos[0] == str(root / "CaReBench/videos/v_00000030_0.mp4")
    assert len(loaded["WebVid-CoVR"].queries) == 3


@pytest.mark.parametrize(
    "rename",
    [
        lambda name: f"{name}.mp4",  # download_videos_AWS.py
        lambda name: name,  # the Flickr original
        lambda name: f"{Path(name).stem}.mp4",  # converted to mp4
        lambda name: f"part1/{name}.mp4",  # in a subfolder
    ],
)
def test_didemo_videos_are_found_under_the_names_downloads_give_them(tmp_path, rename):
    build_stand_in(REGISTRY["DiDeMo-T2V"], tmp_path, count=3)
    videos = tmp_path / "didemo" / "videos"
    for index in range(4):
        target = videos / rename(didemo_video_name(index))
        target.parent.mkdir(parents=True, exist_ok=True)
        (videos / f"{didemo_video_name(index)}.mp4").rename(target)
    (loaded,) = load_tasks(["DiDeMo-T2V"], tmp_path)
    assert loaded.data.skipped == [] and len(loaded.data.corpus) == 3


def test_registered_video_specs_list_every_role_their_loader_reads(tmp_path, monkeypatch):
    """``unite eval layout`` shows the whole tree only when ``files`` names each role a loader looks up."""
    roles: dict[str, set[str]] = {}
    original = loaders_module.find

    def spy(task, folder, role, paths, kind="file", required=True):
        roles.setdefault(task, set()).add(role)
        return original(task, folder, role, paths, kind, required)

    monkeypatch.setattr(loaders_module, "find", spy)
    _replicas(tmp_path)
    for name in VIDEO_TASKS:
        spec = REGISTRY[name]
        load_task_data(spec, tmp_path / spec.data_dirs[0])
        assert roles[name] <= set(spec.files), (name, roles[name])
        assert all(not isinstance(paths, str) and len(paths) >= 2 for paths in spec.files.values()), name


def test_layout_command_says_what_to_download_and_where(capsys):
    assert main(["eval", "layout", "MSRVTT-1K-A-T2V", "CaReBench-General-T2V", "DiDeMo-T2V", "WebVid-CoVR"]) == 0
    out = capsys.readouterr().out
    for text in (
        "CLIP4Clip/releases/download/v0.0/msrvtt_data.zip",
        "frozen-in-time/data/MSRVTT.zip",
        "msrvtt_data/MSRVTT_JSFUSION_test.csv",
        "MSRVTT/videos/all/",
        "videos/videos.zip",
        "json/metadata.json",
        "LisaAnne/LocalizingMoments",
        "collaborative-experts",
        "annotation/webvid-covr/webvid8m-covr_test.csv",
        "datasets/WebVid/8M/train/",
    ):
        assert text in out, text


# --------------------------------------------------------------------------------------------------- DiDeMo


def test_didemo_drops_missing_videos_and_counts_them(tmp_path):
    """CLIP4Clip keeps only the videos it finds (the intersection of the split, the annotations and the files);
    a missing video and its paragraph leave both sides and are counted in the result."""
    build_stand_in(REGISTRY["DiDeMo-T2V"], tmp_path, count=3)
    missing = tmp_path / "didemo" / "videos" / f"{didemo_video_name(1)}.mp4"
    missing.unlink()
    vectors = {f"{didemo_video_name(i)}.mp4": np.eye(4)[i].tolist() for i in range(4)}
    vectors.update({f"{caption(i, 0)} {caption(i, 1)}": np.eye(4)[i].tolist() for i in range(4)})
    for name in ("DiDeMo-T2V", "DiDeMo-V2T"):
        spec = REGISTRY[name]
        (loaded,) = load_tasks([name], tmp_path)
        data = loaded.data
        assert len(data.queries) == len(data.corpus) == 2  # the missing video's paragraph is no distractor
        roles = sorted(role for role, _, _ in data.skipped)
        assert roles == ["candidate", "query"]
        assert all(didemo_video_name(1) in reason for _, _, reason in data.skipped)
        counts = _run(Table(vectors), spec, data)["counts"]
        assert counts["queries_skipped"] == 1 and counts["candidates_skipped"] == 1
        assert counts["queries"] == 3 and counts["candidates"] == 3


def test_other_tasks_still_refuse_missing_videos(tmp_path):
    build_stand_in(REGISTRY["MSVD-T2V"], tmp_path, count=2)
    (tmp_path / "msvd" / "YouTubeClips" / "clip_1_5_10.avi").unlink()
    with pytest.raises(ConfigError, match="1 media file"):
        load_tasks(["MSVD-T2V"], tmp_path)


def test_didemo_embeds_the_first_30_seconds_only(tmp_path, monkeypatch):
    """CaReBench reads DiDeMo with trim30 (frames from the first 30 s; CLIP4Clip reads seconds 0 to 31). A 50 s
    video at 2 fps (100 frames) gives its 48 frames from frames 0..59: round(linspace(0, 59, 48)); a 2 s video
    (8 frames, shorter than 30 s and than 48 frames) is used whole, its last frame repeated. The items go through
    the encoder's own video loader (the end-to-end run below encodes DiDeMo's clips with the model)."""
    spec = REGISTRY["DiDeMo-T2V"]
    assert spec.options["trim_seconds"] == 30 and spec.settings["video_frames"] == 48
    build_stand_in(spec, tmp_path, count=2)
    long_video = tmp_path / "didemo" / "videos" / f"{didemo_video_name(0)}.mp4"
    make_video(long_video, frames=100, fps=2, height=32, width=48, seed=3, gop=10)
    decoded: dict[str, list[int]] = {}
    original = media._decode_from

    def spy(container, path, indices):
        frames = original(container, path, indices)
        for index, frame in zip(indices, frames):  # each decoded frame shows the brightness of its index
            assert abs(float(np.asarray(frame, dtype=np.float64).mean()) - 19.5 - frame_level(index)) < 1.5
        decoded[Path(path).name] = list(indices)
        return frames

    monkeypatch.setattr(media, "_decode_from", spy)
    (loaded,) = load_tasks(["DiDeMo-T2V"], tmp_path)
    assert loaded.data.corpus[0].item.videos == (VideoClip(str(long_video), 0.0, 30.0),)
    settings = EncodingSettings().replace(**spec.settings, **_SMALL_FRAMES)
    for entry in loaded.data.corpus:
        media.load_video(entry.item.videos[0], settings)
    assert decoded[long_video.name] == [int(i) for i in np.round(np.linspace(0, 59, 48))]
    assert decoded[f"{didemo_video_name(1)}.mp4"] == list(range(CLIP_FRAMES)) + [CLIP_FRAMES - 1] * (48 - CLIP_FRAMES)


# ----------------------------------------------------------------------------------------------- end to end


def test_every_video_task_runs_end_to_end_from_its_download(legacy_checkpoint, tmp_path, extract_dir):
    """Every registered video task, from the replicas of its download (CaReBench's videos in a zip), at its
    protocol's frame count: each replica clip holds fewer frames (8) than the task samples (16, 32 or 48), and
    every query is scored. One DiDeMo video is missing: dropped and counted in the JSON and the summary. (Frames
    are made small to keep the run short; the protocols fix frame counts, not these bounds.)"""
    root = _replicas(tmp_path / "data", count=1)  # one video each (48 frames cost seconds on a CPU) ...
    build_stand_in(REGISTRY["WebVid-CoVR"], root, count=2)  # ... but CoVR's second query has the self-similarity
    build_stand_in(REGISTRY["DiDeMo-T2V"], root, count=2)  # ... and DiDeMo loses one of two
    (root / "didemo" / "videos" / f"{didemo_video_name(1)}.mp4").unlink()
    out = tmp_path / "out"
    args = ["eval", "--model", str(legacy_checkpoint), "--data-root", str(root), "--output-dir", str(out)]
    args += [arg for name in VIDEO_TASKS for arg in ("--task", name)]
    small = [f"--{key.replace('_', '-')}={value}" for key, value in _SMALL_FRAMES.items()]
    assert main([*args, *small, "--device", "cpu", "--batch-size", "8", "--no-progress"]) == 0
    for name in VIDEO_TASKS:
        spec = REGISTRY[name]
        result = json.loads((out / f"{name}.json").read_text())
        assert CLIP_FRAMES < spec.settings["video_frames"] == result["settings"]["video_frames"], name
        assert result["protocol"]["deviations"] == {}, name
        scored = result["counts"]["queries"] - result["counts"].get("queries_skipped", 0)
        assert sum(result["diagnostics"]["rank_distribution"]["buckets"].values()) == scored > 0, name
        assert 0.0 <= result["metrics"]["recall@1"] <= 1.0, name
    for name in ("DiDeMo-T2V", "DiDeMo-V2T"):
        counts = json.loads((out / f"{name}.json").read_text())["counts"]
        assert counts["queries_skipped"] == 1 and counts["candidates_skipped"] == 1, name
    assert list(extract_dir.iterdir())  # CaReBench's videos.zip, extracted once
    summary = (out / "summary.md").read_text()
    assert all(name in summary for name in VIDEO_TASKS)


def test_a_clip_is_cached_by_its_file_and_time_range(tmp_path):
    """DiDeMo's items are time ranges of files: the embedding cache keys them by the file's bytes and the range
    (not by the object's identity), so a rerun finds them and another range is another item."""
    from unite.evaluation.cache import item_key
    from unite.types import Item

    path = make_video(tmp_path / "a.mp4", frames=8, fps=4, height=32, width=48)
    copy = shutil.copy(path, tmp_path / "b.mp4")
    first = item_key(Item(videos=(VideoClip(str(path), 0.0, 30.0),)))
    assert first == item_key(Item(videos=(VideoClip(str(path), 0.0, 30.0),)))
    assert first == item_key(Item(videos=(VideoClip(str(copy), 0.0, 30.0),)))  # the same bytes
    assert first != item_key(Item(videos=(VideoClip(str(path), 0.0, 20.0),)))
    assert first != item_key(Item(videos=(str(path),)))


def test_downloaded_zips_are_read_without_unzipping(tmp_path, extract_dir):
    """msrvtt_data.zip, MSRVTT.zip and msvd_data.zip left as downloaded are extracted once, on first use."""
    _replicas(tmp_path, count=2)
    for folder, names in (("msrvtt", ("msrvtt_data", "MSRVTT")), ("msvd", ("msvd_data",))):
        for name in names:
            shutil.make_archive(str(tmp_path / folder / name), "zip", tmp_path / folder, name)
            shutil.rmtree(tmp_path / folder / name)
    loaded = {task.spec.name: task.data for task in load_tasks(["MSRVTT-1K-A-T2V", "MSVD-V2T"], tmp_path)}
    assert len(loaded["MSRVTT-1K-A-T2V"].queries) == 2 and len(loaded["MSVD-V2T"].corpus) == 4
    assert all(p.startswith(str(extract_dir)) for p in loaded["MSRVTT-1K-A-T2V"].media_paths())
