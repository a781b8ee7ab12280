"""Runs end to end: exact search wiring, the cache (rerun, resume, shards), the CLI contract, reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unite.cli.main import main
from unite.errors import MediaError
from unite.evaluation import REGISTRY, EvalConfig, evaluate, evaluate_task, load_task_data, load_task_spec
from unite.evaluation.reports import summary_markdown
from unite.evaluation.synthetic import build_stand_in, write_generic_task
from unite.settings import EncodingSettings


class Counting:
    """Wraps an encoder, counting the items it is asked to encode; can fail on a given call."""

    def __init__(self, inner, fail_on_call: int | None = None) -> None:
        self.inner, self.fail_on_call, self.calls, self.items = inner, fail_on_call, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, items, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("interrupted on purpose")
        self.items += len(items)
        return self.inner.encode(items, **kwargs)


class OneHot:
    """An encoder whose embedding of an item is the one-hot vector of the item number in its caption or file name.

    With it, every query's best candidate is its own item, so every recall is 1 and every rank is 1.
    """

    settings = EncodingSettings()
    name_or_path = "one-hot"
    embedding_dim = 16
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)
        self.model.config = type("Config", (), {"_attn_implementation": "none"})()

    def encode(self, items, **kwargs):
        out = np.zeros((len(items), self.embedding_dim), dtype=np.float32)
        for row, item in enumerate(items):
            if item.text and item.text.startswith("caption"):
                number = int(re.match(r"caption (\d+)", item.text)[1])
            else:
                name = Path(str((item.images or item.videos)[0])).stem
                number = int(re.findall(r"\d+", name)[0]) % 1000
            out[row, number % self.embedding_dim] = 1.0
        return out


@pytest.fixture()
def generic(tmp_path):
    spec, folder = load_task_spec(write_generic_task(tmp_path / "task", count=4))
    return spec, load_task_data(spec, folder)


def test_perfect_embeddings_score_one_in_every_pair_layout(tmp_path):
    root = tmp_path / "data"
    names = ["Flickr30K-T2I", "Flickr30K-I2T", "MSVD-V2T", "DOCCI-I2T", "Urban1K-T2I", "MSRVTT-1K-A-T2V"]
    for name in names:
        spec = REGISTRY[name].replace(settings={})  # the fake encoder has no pixel pipeline to set
        build_stand_in(spec, root, count=4)
        result = evaluate_task(
            OneHot(), spec, load_task_data(spec, root / spec.data_dir), EvalConfig(show_progress=False)
        )
        assert result["metrics"]["recall@1"] == 1.0 and result["metrics"]["median_rank"] == 1.0, name
        assert result["metrics"]["ndcg@10"] == pytest.approx(1.0), name
        histogram = result["diagnostics"]["score_histogram"]
        assert sum(histogram["positives"]) == result["counts"]["judgements"]
        assert histogram["positives"][-1] == sum(histogram["positives"])  # every positive scores 1.0


def test_generic_run_records_how_it_was_made(encoder, generic, tmp_path):
    spec, data = generic
    result = evaluate_task(encoder, spec, data, EvalConfig(batch_size=3, show_progress=False, revision="abc"))
    assert set(result["metrics"]) >= {"recall@1", "recall@5", "recall@10", "ndcg@10", "mrr@10", "median_rank"}
    assert result["metrics"]["recall@5"] == 1.0  # four candidates: everything is within the first five
    assert result["counts"]["queries"] == 4 and result["counts"]["candidates"] == 4
    assert result["settings"]["batch_size"] == 3 and result["settings"]["video_fps"] == encoder.settings.video_fps
    assert result["settings"]["prompt_template"].startswith("<|im_start|>system")
    assert result["checkpoint"]["revision"] == "abc" and len(result["checkpoint"]["weights_sha256"]) == 64
    assert result["versions"]["torch"] == torch.__version__.split("+")[0] or result["versions"]["torch"]
    assert re.match(r"\d{4}-\d{2}-\d{2}T", result["date"])
    gap = result["diagnostics"]["modality_gap"]
    assert set(gap) == {"query:text -> candidate:text", "query:text -> candidate:image"}
    assert sum(result["diagnostics"]["rank_distribution"]["buckets"].values()) == 4
    negatives = sum(result["diagnostics"]["score_histogram"]["negatives"])
    assert negatives == 4 * 4 - result["counts"]["judgements"]


def test_rerun_encodes_nothing_and_an_interrupted_run_resumes(encoder, generic, tmp_path):
    spec, data = generic
    total = 8  # four text queries, two text and two image candidates, all distinct
    reference = evaluate_task(encoder, spec, data, EvalConfig(show_progress=False))
    config = EvalConfig(cache_dir=tmp_path / "cache", write_chunk=3, show_progress=False)
    flaky = Counting(encoder, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_task(flaky, spec, data, config)
    assert flaky.items == 3  # the first chunk was encoded and written before the interruption
    resumed = Counting(encoder)
    result = evaluate_task(resumed, spec, data, config)
    assert resumed.items == total - 3 and result["cache"] == {**result["cache"], "hits": 3, "encoded": total - 3}
    for name, value in reference["metrics"].items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6)
    again = Counting(encoder)
    assert evaluate_task(again, spec, data, config)["cache"]["encoded"] == 0 and again.items == 0
    # Other settings are another namespace: nothing stale is reused.
    other = Counting(encoder)
    evaluate_task(other, spec.replace(query_instruction="Find the match:"), data, config)
    assert other.items == 4  # the queries changed (instruction); the candidates are cached


def test_ranks_share_the_encoding(encoder, generic, tmp_path):
    spec, data = generic
    workers = [Counting(encoder), Counting(encoder)]
    assert evaluate_task(workers[1], spec, data, EvalConfig(cache_dir=tmp_path, rank=1, world_size=2)) is None
    result = evaluate_task(workers[0], spec, data, EvalConfig(cache_dir=tmp_path, rank=0, world_size=2))
    assert [w.items for w in workers] == [4, 4] and result["cache"]["world_size"] == 2
    assert evaluate_task(Counting(encoder), spec, data, EvalConfig(cache_dir=tmp_path))["cache"]["encoded"] == 0


def test_a_bad_item_names_the_task_and_id(encoder, tmp_path):
    task = write_generic_task(tmp_path / "task", count=2)
    (task.parent / "images" / "d1.png").write_bytes(b"not a png")
    spec, folder = load_task_spec(task)
    with pytest.raises(MediaError, match=r"task synthetic-generic: candidate 'd1': "):
        evaluate_task(encoder, spec, load_task_data(spec, folder), EvalConfig(show_progress=False))
    code = main(
        ["eval", "--model", str(encoder.name_or_path), "--task", str(task), "--output-dir", str(tmp_path / "o")]
    )
    assert code == 1


def test_cli_contract_on_every_layout(legacy_checkpoint, tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    names = [
        "MMEB-ImageNet-1K",
        "Flickr30K-T2I",
        "ShareGPT4V-1K-I2T",
        "Urban1K-T2I",
        "DOCCI-T2I",
        "MSRVTT-1K-A-T2V",
        "MSVD-T2V",
        "DiDeMo-V2T",
        "CaReBench-General-T2V",
        "WebVid-CoVR",
    ]
    for name in names:
        build_stand_in(REGISTRY[name], root, count=2)
    task = write_generic_task(tmp_path / "generic", count=2)
    args = ["eval", "--model", str(legacy_checkpoint), "--data-root", str(root), "--output-dir", str(out)]
    args += ["--task", str(task), *[arg for name in names for arg in ("--task", name)]]
    args += ["--video-frames", "2", "--device", "cpu", "--batch-size", "8", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    for name in [*names, "synthetic-generic"]:
        result = json.loads((out / f"{name}.json").read_text())
        assert result["task"] == name
        assert {"recall@1", "recall@5", "recall@10", "ndcg@10", "mrr@10", "median_rank"} <= set(result["metrics"])
        assert result["settings"]["video_frames"] == 2 and result["versions"]["transformers"]
        assert name in stdout
    mmeb = json.loads((out / "MMEB-ImageNet-1K.json").read_text())
    assert "precision@1" in mmeb["metrics"] and mmeb["counts"]["candidates_per_query"] == 3
    covr = json.loads((out / "WebVid-CoVR.json").read_text())
    assert covr["protocol"]["deviations"] == {"video_frames": {"protocol": 16, "used": 2}}
    summary = (out / "summary.md").read_text()
    assert re.search(r"\| WebVid-CoVR \| recall@1 \| [0-9.]+ \|  \|  \| 69\.1 \| 72\.5 \|", summary)
    assert "| Overall |" in summary and "1 of 36" in summary
    # A rerun encodes nothing; --limit is recorded.
    assert main([*args, "--limit", "1"]) == 0
    again = json.loads((out / "Flickr30K-T2I.json").read_text())
    assert again["cache"]["encoded"] == 0 and again["settings"]["limit"] == 1 and again["counts"]["queries"] == 1


def test_compare_shows_what_differs(encoder, generic, tmp_path, capsys):
    spec, data = generic
    written = evaluate(encoder, [tmp_path / "task" / "task.yaml"], output_dir=tmp_path / "h", config=EvalConfig())
    assert [r["task"] for r in written] == ["synthetic-generic"] and (tmp_path / "h" / "summary.md").is_file()
    paths = []
    for batch_size, folder in ((2, "a"), (4, "b")):
        result = evaluate_task(encoder, spec, data, EvalConfig(batch_size=batch_size, show_progress=False))
        path = tmp_path / folder / "r.json"
        path.parent.mkdir()
        path.write_text(json.dumps(result))
        paths.append(str(path))
    assert main(["eval", "--compare", *paths]) == 0
    out = capsys.readouterr().out
    assert "| recall@1 |" in out and "| settings.batch_size | 2 | 4 |" in out
    assert "date" not in out.split("Differences")[1]
    assert main(["eval", "--compare", paths[0], str(tmp_path / "missing.json")]) == 1
    assert "result file not found" in capsys.readouterr().err


def test_summary_puts_paper_numbers_beside_ours():
    results = [
        {
            "task": "DOCCI-T2I",
            "main_metric": "recall@1",
            "metrics": {"recall@1": 0.5},
            "paper": REGISTRY["DOCCI-T2I"].paper,
        },
        {"task": "MMEB-VOC2007", "main_metric": "precision@1", "metrics": {"precision@1": 0.25}, "paper": {}},
        {"task": "MMEB-RefCOCO", "main_metric": "precision@1", "metrics": {"precision@1": 0.75}, "paper": {}},
    ]
    text = summary_markdown(results)
    assert "| DOCCI-T2I | recall@1 | 50.0 | 81.4 | 87.2 |" in text
    assert "| Overall | 50.0 | 63.3 | 70.3 | 65.8 | 2 of 36 |" in text  # mean of 25 and 75
    assert "| IND | 25.0 | 65.8 | 73.6 |  | 1 of 20 |" in text and "| OOD | 75.0 |" in text
    assert "| Grounding | 75.0 |" in text and "VQA" not in text


def test_list_tasks(capsys):
    assert main(["eval", "--list-tasks"]) == 0
    out = capsys.readouterr().out
    assert "| MSRVTT-1K-A-T2V | Coarse video | recall@1 | video_frames=48 |" in out and "- mmeb: 36 tasks" in out


@pytest.mark.slow
def test_torchrun_shares_encoding_between_two_processes(legacy_checkpoint, tmp_path):
    """Two real gloo processes under torchrun split the encoding and give the single-process metrics."""
    import socket
    import subprocess
    import sys

    generic = write_generic_task(tmp_path / "task", count=4)
    single = tmp_path / "single"
    assert (
        main(
            [
                "eval",
                "--model",
                str(legacy_checkpoint),
                "--task",
                str(generic),
                "--output-dir",
                str(single),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    shared = tmp_path / "shared"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        port,
        "-m",
        "unite.cli.main",
        "eval",
        "--model",
        str(legacy_checkpoint),
        "--task",
        str(generic),
        "--output-dir",
        str(shared),
        "--device",
        "cpu",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name = next(single.glob("*.json")).name
    first, second = (json.loads((folder / name).read_text()) for folder in (single, shared))
    assert second["cache"]["world_size"] == 2
    for metric, value in first["metrics"].items():
        assert second["metrics"][metric] == pytest.approx(value, abs=1e-6), metric


def test_a_clip_shorter_than_the_frame_count_is_scored(encoder, tmp_path):
    """MSVD at its protocol's 48 frames with a 3-frame clip (0.1 s) among 8-frame ones: the short clip is embedded
    from its own frames, the last repeated up to 48, and every query is scored instead of the task aborting."""
    from unite.testing import make_video

    spec = REGISTRY["MSVD-T2V"]
    folder = build_stand_in(spec, tmp_path / "data", count=3)
    make_video(folder / "YouTubeClips" / "clip_1_5_10.mp4", frames=3, fps=30, height=32, width=48, seed=7)
    result = evaluate_task(encoder, spec, load_task_data(spec, folder), EvalConfig(show_progress=False))
    assert result["settings"]["video_frames"] == 48 and result["protocol"]["deviations"] == {}
    assert result["counts"]["queries"] == 6 and result["counts"]["candidates"] == 3  # two captions per clip
    assert sum(result["diagnostics"]["rank_distribution"]["buckets"].values()) == 6
    assert 0.0 <= result["metrics"]["recall@1"] <= 1.0 and result["cache"]["encoded"] == 6 + 3
    # At 6 frames only the short clip holds fewer frames than asked; the 8-frame clips are sampled as before.
    config = EvalConfig(show_progress=False, setting_overrides={"video_frames": 6})
    six = evaluate_task(encoder, spec, load_task_data(spec, folder), config)
    assert six["settings"]["video_frames"] == 6 and six["counts"]["queries"] == 6
    assert sum(six["diagnostics"]["rank_distribution"]["buckets"].values()) == 6
