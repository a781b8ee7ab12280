"""The mteb wrapper: inputs as mteb batches them, instructions from the task metadata, and mteb's own retrieval
evaluation agreeing with `unite eval` on the same data. Nothing is downloaded: the mteb task is built from local
data the way mteb's own mock tasks are (``load_data`` fills ``dataset`` with a ``RetrievalSplitData``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unite.errors import ConfigError, InputError
from unite.testing import make_image, make_video
from unite.types import Item

mteb = pytest.importorskip("mteb", reason="the mteb extra is part of dev: pip install -e '.[dev]'")

from datasets import Dataset  # noqa: E402  (installed with mteb)
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from PIL import Image  # noqa: E402

from unite.cli.main import main  # noqa: E402
from unite.data.media import VideoInfo, sample_indices, video_frame_count  # noqa: E402
from unite.integrations.mteb import MtebEncoder, batch_items, require_mteb  # noqa: E402

INSTRUCTION = "Find the caption or picture that matches:"
K_VALUES = (1, 3, 5, 10)


def _local_task(name: str, category: str, modalities: list[str], records: dict, prompt=None) -> AbsTaskRetrieval:
    """An mteb retrieval task over in-memory records; the per-query scores of mteb's own evaluator are kept."""
    metadata = TaskMetadata(
        name=name,
        description="a local test task",
        dataset={"path": "local/none", "revision": "none"},
        type="Any2AnyRetrieval",
        category=category,
        modalities=modalities,
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        prompt=prompt,
    )

    class LocalTask(AbsTaskRetrieval):
        k_values = K_VALUES

        def load_data(self, num_proc=None, **kwargs) -> None:
            self.dataset = {"default": {"test": RetrievalSplitData(**records, top_ranked=None)}}
            self.data_loaded = True

        def task_specific_scores(self, scores, qrels, results, hf_split, hf_subset):
            self.per_query = scores  # pytrec_eval's values per query, before mteb rounds the means
            return {}

    LocalTask.metadata = metadata
    return LocalTask()


def _write_generic(folder: Path, queries: list[dict], corpus: list[dict], qrels: dict, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in queries))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(line) + "\n" for line in corpus))
    lines = [f"{q}\t{c}\t{g}\n" for q, judged in qrels.items() for c, g in judged.items()]
    (folder / "qrels.tsv").write_text("".join(lines))
    metrics = [f"{kind}@{k}" for kind in ("recall", "ndcg", "precision") for k in K_VALUES] + ["mrr@10"]
    (folder / "task.yaml").write_text(f"name: {folder.name}\nmetrics: {json.dumps(metrics)}\n{extra}")
    return folder / "task.yaml"


def _ir_recall(records: list[dict], k: int) -> float:
    """IR recall@k (what mteb calls recall_at_k): the share of each query's relevant candidates in its first k."""
    values = []
    for record in records:
        relevant = {cid for cid, grade in record["judged"].items() if grade > 0}
        found = {cid for cid, _ in record["ranking"][:k]} & relevant
        values.append(len(found) / len(relevant))
    return float(np.mean(values))


@pytest.mark.slow
def test_mteb_evaluation_agrees_with_unite_eval(legacy_checkpoint, encoder, tmp_path):
    """Text queries against text and image candidates, several positives per query with grades 1 to 3: mteb's
    evaluation with the wrapper and `unite eval` on the generic files give the same ndcg@k, hit rate (our
    recall@k), IR recall (recomputed from the saved rankings), precision@k and mrr@10."""
    folder = tmp_path / "local-t2it"
    (folder / "images").mkdir(parents=True)
    queries = [{"id": f"q{i}", "text": f"caption {i}: {i + 1} shapes on a plain background"} for i in range(6)]
    corpus = []
    for i in range(10):
        if i % 2:
            make_image(48 + 4 * i, 40, seed=i).save(folder / "images" / f"d{i}.png")
            corpus.append({"id": f"d{i}", "image": f"images/d{i}.png"})
        else:
            corpus.append({"id": f"d{i}", "text": f"caption {i} of a picture"})
    qrels = {f"q{i}": {f"d{(3 * i + 4 * j) % 10}": 1 + (i + j) % 3 for j in range(2 + i % 2)} for i in range(6)}
    task_yaml = _write_generic(folder, queries, corpus, qrels, f"query_instruction: {json.dumps(INSTRUCTION)}\n")
    out = tmp_path / "out"
    args = ["eval", "--model", str(legacy_checkpoint), "--task", str(task_yaml), "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", "--no-progress", "--save-rankings", "--rankings-depth", "all"]) == 0
    ours = json.loads((out / "local-t2it.json").read_text())
    rankings = [json.loads(line) for line in (out / "local-t2it.rankings.jsonl").read_text().splitlines()]

    records = {
        "queries": Dataset.from_list(queries),
        "corpus": Dataset.from_dict(
            {
                "id": [c["id"] for c in corpus],
                "text": [c.get("text", "") for c in corpus],
                "image": [Image.open(folder / c["image"]) if "image" in c else None for c in corpus],
            }
        ),
        "relevant_docs": qrels,
    }
    task = _local_task("LocalT2IT", "t2it", ["text", "image"], records, prompt={"query": INSTRUCTION})
    result = mteb.evaluate(
        MtebEncoder(encoder), task, cache=None, encode_kwargs={"batch_size": 4}, show_progress_bar=False
    )
    scores = result.task_results[0].scores["test"][0]
    per_query = task.per_query
    assert len(per_query) == ours["counts"]["queries_scored"] == 6

    def mean(measure: str) -> float:
        return float(np.mean([values[measure] for values in per_query.values()]))

    for k in K_VALUES:
        pairs = [
            (f"ndcg_at_{k}", f"ndcg@{k}", f"ndcg_cut_{k}"),
            (f"hit_rate_at_{k}", f"recall@{k}", f"success_{k}"),
            (f"precision_at_{k}", f"precision@{k}", f"P_{k}"),
        ]
        for theirs, name, measure in pairs:
            assert mean(measure) == pytest.approx(ours["metrics"][name], abs=1e-6), theirs
            assert scores[theirs] == pytest.approx(round(ours["metrics"][name], 5), abs=1e-6), theirs  # mteb rounds
        assert mean(f"recall_{k}") == pytest.approx(_ir_recall(rankings, k), abs=1e-6), f"recall_at_{k}"
        assert scores[f"recall_at_{k}"] == pytest.approx(round(_ir_recall(rankings, k), 5), abs=1e-6)
    assert scores["mrr_at_10"] == pytest.approx(ours["metrics"]["mrr@10"], abs=1e-6)
    assert scores["main_score"] == scores["ndcg_at_10"]


def test_mteb_video_task_agrees_with_unite_eval(legacy_checkpoint, encoder, tmp_path):
    """Text to video with videos given to mteb as file paths: the wrapper sends them through unite's video
    pipeline, so mteb's ndcg@10 equals `unite eval`'s on the same files."""
    folder = tmp_path / "local-t2v"
    (folder / "videos").mkdir(parents=True)
    queries = [{"id": f"q{i}", "text": f"caption {i}: a clip of moving colours"} for i in range(3)]
    corpus = []
    for i in range(3):
        make_video(folder / "videos" / f"v{i}.mp4", frames=6 + 2 * i, fps=4, height=32, width=40, seed=20 + i)
        corpus.append({"id": f"v{i}", "video": f"videos/v{i}.mp4"})
    qrels = {f"q{i}": {f"v{i}": 1} for i in range(3)}
    task_yaml = _write_generic(folder, queries, corpus, qrels, "settings: {video_frames: 4}\n")
    out = tmp_path / "out"
    args = ["eval", "--model", str(legacy_checkpoint), "--task", str(task_yaml), "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    ours = json.loads((out / "local-t2v.json").read_text())
    paths = [str(folder / c["video"]) for c in corpus]
    records = {
        "queries": Dataset.from_list(queries),
        "corpus": Dataset.from_dict({"id": [c["id"] for c in corpus], "video": paths}),
        "relevant_docs": qrels,
    }
    task = _local_task("LocalT2V", "t2v", ["text", "video"], records)
    four_frames = type(encoder)(encoder.model, encoder.tokenizer, encoder.settings.replace(video_frames=4))
    result = mteb.evaluate(MtebEncoder(four_frames), task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert scores["ndcg_at_10"] == pytest.approx(round(ours["metrics"]["ndcg@10"], 5), abs=1e-6)
    assert scores["hit_rate_at_1"] == pytest.approx(round(ours["metrics"]["recall@1"], 5), abs=1e-6)


class _Metadata:
    """What the wrapper reads of mteb's TaskMetadata."""

    def __init__(self, prompt=None) -> None:
        self.prompt = prompt


def test_instructions_come_from_the_task_prompt_or_the_wrapper(encoder):
    model = MtebEncoder(encoder)
    assert model.instruction(_Metadata("Find it"), "query") == "Find it"
    assert model.instruction(_Metadata("Find it"), "document") is None  # a plain prompt instructs the queries
    both = _Metadata({"query": "Q:", "document": "D:"})
    assert (model.instruction(both, "query"), model.instruction(both, "document")) == ("Q:", "D:")
    assert model.instruction(_Metadata(), "query") is None  # no prompt, no instruction (mteb's default is not used)
    assert MtebEncoder(encoder, use_task_prompts=False).instruction(both, "query") is None
    fixed = MtebEncoder(encoder, query_instruction="Mine:")
    assert (fixed.instruction(both, "query"), fixed.instruction(both, "document")) == ("Mine:", "D:")
    batches = [{"id": ["q0", "q1"], "text": ["first query", "second query"]}, {"id": ["q2"], "text": ["third"]}]
    wrapped = model.encode(batches, task_metadata=both, hf_split="test", hf_subset="default", prompt_type="query")
    direct = encoder.encode(["first query", "second query", "third"], instruction="Q:")
    np.testing.assert_allclose(wrapped, direct, atol=1e-5)
    meta = model.mteb_model_meta
    assert meta.embed_dim == encoder.embedding_dim and set(meta.modalities) == {"text", "image", "video"}
    assert meta.name.startswith("unite-embed/")


def test_batches_become_items_as_unite_reads_them(encoder, tmp_path):
    """A fused row (text and image) is one item; image bytes, video paths, video bytes and frame tensors are read
    as unite reads them; empty text is no text; audio is refused."""
    image_path, video_path = tmp_path / "a.png", tmp_path / "v.mp4"
    make_image(50, 40, seed=3).save(image_path)
    make_video(video_path, frames=8, fps=4, height=32, width=40, seed=4)
    batch = {
        "id": ["r0", "r1", "r2", "r3"],
        "text": ["a caption", "", "with a video", "   "],
        "image": [Image.open(image_path), {"bytes": image_path.read_bytes(), "path": None}, None, None],
        "video": [None, None, str(video_path), {"bytes": video_path.read_bytes(), "path": "clip.mp4"}],
    }
    items = batch_items(batch, "Find:", encoder.settings, tmp_path)
    assert [item.text for item in items] == ["a caption", None, "with a video", None]
    assert all(item.instruction == "Find:" for item in items)
    assert [len(item.images) for item in items] == [1, 1, 0, 0] and [len(item.videos) for item in items] == [0, 0, 1, 1]
    wrapped = encoder.encode(items)
    direct = encoder.encode(
        [
            Item("a caption", (str(image_path),), instruction="Find:"),
            Item(None, (str(image_path),), instruction="Find:"),
            Item("with a video", videos=(str(video_path),), instruction="Find:"),
            Item(None, videos=(str(video_path),), instruction="Find:"),
        ]
    )
    np.testing.assert_allclose((wrapped * direct).sum(axis=1), 1.0, atol=1e-5)
    frames = torch.randint(0, 256, (4, 3, 24, 32), dtype=torch.uint8)  # (T, C, H, W) as frame collators give
    [tensor_item] = batch_items({"video": [frames]}, None, encoder.settings, tmp_path)
    np.testing.assert_array_equal(tensor_item.videos[0], frames.permute(0, 2, 3, 1).numpy())
    with pytest.raises(InputError, match="audio"):
        batch_items({"audio": [{"array": np.zeros(10), "sampling_rate": 16000}]}, None, encoder.settings, tmp_path)


class _Decoder:
    """A stand-in for torchcodec's VideoDecoder: metadata and ``get_frames_at``, recording what was asked."""

    class _Frames:
        def __init__(self, data: torch.Tensor) -> None:
            self.data = data

    def __init__(self, frames: int, fps: float) -> None:
        self.metadata = type("Meta", (), {"num_frames": frames, "average_fps": fps, "height": 24, "width": 32})()
        self.asked: list[int] = []

    def get_frames_at(self, indices):
        self.asked = list(indices)
        return self._Frames(torch.stack([torch.full((3, 24, 32), i, dtype=torch.uint8) for i in indices]))


def test_decoded_videos_are_sampled_with_unites_frame_rule(encoder, tmp_path):
    decoder = _Decoder(frames=50, fps=10.0)  # 5 s at 10 fps: unite samples 1 fps, at least 4 frames
    [item] = batch_items({"video": [decoder]}, None, encoder.settings, tmp_path)
    expected = sample_indices(50, video_frame_count(VideoInfo(50, 10.0, 24, 32), encoder.settings))
    assert decoder.asked == expected and len(expected) == 4
    assert [int(frame[0, 0, 0]) for frame in item.videos[0]] == expected
    vector = encoder.encode([item])  # the sampled frames embed as a frame list
    assert vector.shape == (1, encoder.embedding_dim) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_missing_mteb_names_the_extra(encoder, monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'unite-embed\[mteb\]'"):
        require_mteb()
    with pytest.raises(ConfigError, match="mteb >= 2"):
        MtebEncoder(encoder)
