"""Runs end to end: exact search wiring, the cache (rerun, resume, shards), the CLI contract, reports."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unite.cli.main import main
from unite.errors import ConfigError
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

    def encode_with_errors(self, items, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("interrupted on purpose")
        self.items += len(items)
        return self.inner.encode_with_errors(items, **kwargs)


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
        folder = build_stand_in(spec, root, count=4)
        result = evaluate_task(OneHot(), spec, load_task_data(spec, folder), EvalConfig(show_progress=False))
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


def _write_task(folder: Path, queries: list[dict], corpus: list[dict], qrels: list[tuple[str, str, int]], extra=""):
    """A generic task from explicit lines; images named ``*.png`` are drawn, those named ``bad*.png`` are corrupt
    (with bytes of their own, unless the name holds ``same``)."""
    from unite.testing import make_image

    folder.mkdir(parents=True, exist_ok=True)
    for seed, record in enumerate([*queries, *corpus]):
        image = record.get("image")
        if image and Path(image).name.startswith("bad"):
            (folder / image).parent.mkdir(parents=True, exist_ok=True)
            (folder / image).write_bytes(b"not a png: " + image.encode() if "same" not in image else b"not a png")
        elif image:
            (folder / image).parent.mkdir(parents=True, exist_ok=True)
            make_image(40 + seed, 36, seed=seed).save(folder / image)
    (folder / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in queries))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(line) + "\n" for line in corpus))
    (folder / "qrels.tsv").write_text("".join(f"{q}\t{c}\t{g}\n" for q, c, g in qrels))
    (folder / "task.yaml").write_text(f"name: {folder.name}\n{extra}")
    return folder / "task.yaml"


def _hand_metrics(query_vectors, corpus_vectors, query_ids, corpus_ids, qrels) -> dict[str, float]:
    """recall@1/5/10, ndcg@10 and mrr@10 from their definitions (docs/evaluation.md), ties non-relevant first."""
    values: dict[str, list[float]] = {"recall@1": [], "recall@5": [], "recall@10": [], "ndcg@10": [], "mrr@10": []}
    for row, query_id in enumerate(query_ids):
        judged = qrels[query_id]
        scores = [float(np.dot(query_vectors[row], corpus_vectors[column])) for column in range(len(corpus_ids))]
        order = sorted(range(len(corpus_ids)), key=lambda c: (-scores[c], judged.get(corpus_ids[c], 0) > 0))
        grades = [judged.get(corpus_ids[column], 0) for column in order]
        first = next(position for position, grade in enumerate(grades, start=1) if grade > 0)
        for k in (1, 5, 10):
            values[f"recall@{k}"].append(1.0 if first <= k else 0.0)
        dcg = sum(grade / np.log2(position + 1) for position, grade in enumerate(grades[:10], start=1))
        ideal = sorted((grade for grade in judged.values() if grade > 0), reverse=True)[:10]
        values["ndcg@10"].append(dcg / sum(grade / np.log2(position + 1) for position, grade in enumerate(ideal, 1)))
        values["mrr@10"].append(1.0 / first if first <= 10 else 0.0)
    return {name: float(np.mean(column)) for name, column in values.items()}


def _skipping_task(folder: Path) -> Path:
    """Four queries, four candidates; query q1 (an image) and candidate d1 (an image) are corrupt. Unique items in
    order q0 q1 q2 q3 d0 d1 d2 d3: both corrupt items sit at odd positions, the share of rank 1 of two.
    q2 judges only d1 relevant, so it cannot be scored either; q0 keeps d0 after losing d1."""
    queries = [
        {"id": "q0", "text": "caption 0 a red square"},
        {"id": "q1", "image": "images/bad_q1.png"},
        {"id": "q2", "text": "caption 2 a green circle"},
        {"id": "q3", "text": "caption 3 a blue line"},
    ]
    corpus = [
        {"id": "d0", "text": "caption 0 red"},
        {"id": "d1", "image": "images/bad_d1.png"},
        {"id": "d2", "text": "caption 3 blue"},
        {"id": "d3", "image": "images/d3.png"},
    ]
    qrels = [("q0", "d0", 1), ("q0", "d1", 2), ("q1", "d2", 1), ("q2", "d1", 1), ("q3", "d2", 1), ("q3", "d3", 2)]
    return _write_task(folder, queries, corpus, qrels)


#: What the skipping task skips, in the order reported: the failed items (queries first), then the query left
#: without a relevant candidate.
EXPECTED_SKIPS = [("query", "q1"), ("candidate", "d1"), ("query", "q2")]


def test_a_bad_item_is_skipped_reported_and_retried(encoder, tmp_path):
    """A corrupt query and a corrupt candidate end nothing: they are skipped with their file named, the query whose
    only relevant candidate failed is skipped too, the metrics are those of the scored queries against the
    candidates left (computed here by hand), and a rerun tries the failed items again."""
    task = _skipping_task(tmp_path / "skipping")
    spec, folder = load_task_spec(task)
    config = EvalConfig(cache_dir=tmp_path / "cache", show_progress=False)
    first = Counting(encoder)
    result = evaluate_task(first, spec, load_task_data(spec, folder), config)
    assert [(s["role"], s["id"]) for s in result["skipped"]] == EXPECTED_SKIPS
    reasons = {s["id"]: s["reason"] for s in result["skipped"]}
    assert "bad_q1.png" in reasons["q1"] and "bad_d1.png" in reasons["d1"] and "d1" in reasons["q2"]
    assert all("\n" not in reason for reason in reasons.values())
    counts = result["counts"]
    assert (counts["queries"], counts["queries_scored"], counts["queries_skipped"]) == (4, 2, 2)
    assert (counts["candidates"], counts["candidates_searched"], counts["candidates_skipped"]) == (4, 3, 1)
    assert result["cache"]["failed"] == 2 and result["cache"]["encoded"] == 6
    queries = encoder.encode(["caption 0 a red square", "caption 3 a blue line"])
    corpus = encoder.encode(["caption 0 red", "caption 3 blue", {"image": str(folder / "images" / "d3.png")}])
    judged = {"q0": {"d0": 1}, "q3": {"d2": 1, "d3": 2}}  # d1's judgements left with it
    expected = _hand_metrics(queries, corpus, ["q0", "q3"], ["d0", "d2", "d3"], judged)
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name
    again = Counting(encoder)
    rerun = evaluate_task(again, spec, load_task_data(spec, folder), config)
    assert again.items == 2 and rerun["cache"]["hits"] == 6 and rerun["cache"]["failed"] == 2  # never cached
    assert rerun["metrics"] == pytest.approx(result["metrics"])


def test_a_skipped_item_names_its_own_file_when_another_holds_the_same_bytes(encoder, tmp_path):
    """Items are cached by content, so two corrupt files with the same bytes are one item: each skipped candidate
    still names its own file."""
    queries = [{"id": "q0", "text": "caption 0"}]
    corpus = [{"id": "d0", "text": "caption 0 text"}]
    corpus += [{"id": f"d{i}", "image": f"images/bad_same_{i}.png"} for i in (1, 2)]
    spec, folder = load_task_spec(_write_task(tmp_path / "same", queries, corpus, [("q0", "d0", 1)]))
    result = evaluate_task(encoder, spec, load_task_data(spec, folder), EvalConfig(show_progress=False))
    reasons = {s["id"]: s["reason"] for s in result["skipped"]}
    assert "bad_same_1.png" in reasons["d1"] and "bad_same_2.png" in reasons["d2"]
    assert "bad_same_1" not in reasons["d2"]


def test_failures_of_other_ranks_reach_rank_0(encoder, tmp_path):
    """Both corrupt items fall in rank 1's share; rank 0 learns them from rank 1's failures file."""
    task = _skipping_task(tmp_path / "skipping")
    spec, folder = load_task_spec(task)
    data = load_task_data(spec, folder)
    single = evaluate_task(encoder, spec, data, EvalConfig(show_progress=False))
    workers = [Counting(encoder), Counting(encoder)]
    config = {"cache_dir": tmp_path / "cache", "show_progress": False, "world_size": 2}
    assert evaluate_task(workers[1], spec, data, EvalConfig(rank=1, **config)) is None
    shared = evaluate_task(workers[0], spec, data, EvalConfig(rank=0, **config))
    assert workers[1].items == 4 and workers[0].items == 4  # q1 and d1 were rank 1's to encode
    assert shared["skipped"] == single["skipped"] and shared["counts"] == single["counts"]
    assert shared["metrics"] == pytest.approx(single["metrics"], abs=1e-6)


def test_rank_0_refuses_items_no_rank_encoded(encoder, generic, tmp_path):
    spec, data = generic
    with pytest.raises(ConfigError, match="neither in the cache nor reported"):
        evaluate_task(encoder, spec, data, EvalConfig(cache_dir=tmp_path, rank=0, world_size=2, show_progress=False))
    with pytest.raises(ConfigError, match="cache folder"):
        evaluate_task(encoder, spec, data, EvalConfig(rank=0, world_size=2, show_progress=False))


def test_nothing_scored_is_a_result_not_a_crash(encoder, tmp_path):
    queries = [{"id": "q0", "image": "images/bad_q0.png"}]
    corpus = [{"id": "d0", "text": "caption 0"}]
    spec, folder = load_task_spec(_write_task(tmp_path / "none", queries, corpus, [("q0", "d0", 1)]))
    result = evaluate_task(encoder, spec, load_task_data(spec, folder), EvalConfig(show_progress=False))
    assert result["counts"]["queries_scored"] == 0 and result["counts"]["queries_skipped"] == 1
    assert all(value != value for value in result["metrics"].values())  # NaN: nothing to average


def test_missing_media_fail_fast_unless_the_spec_drops_them(encoder, tmp_path, capsys):
    """By default a missing media file stops the run before the model loads; ``options: {missing_media: drop}``
    skips the items naming it and reports them."""
    from unite.evaluation import load_tasks

    queries = [{"id": "q0", "text": "caption 0"}, {"id": "q1", "text": "caption 1"}]
    corpus = [{"id": "d0", "text": "caption 0 text"}, {"id": "d1", "image": "images/d1.png"}]
    qrels = [("q0", "d0", 1), ("q1", "d1", 1)]
    strict = _write_task(tmp_path / "strict", queries, corpus, qrels)
    (tmp_path / "strict" / "images" / "d1.png").unlink()
    with pytest.raises(ConfigError, match=r"1 media file\(s\) not found, e\.g\. .*d1\.png.*missing_media: drop"):
        load_tasks([strict])
    lenient = _write_task(tmp_path / "lenient", queries, corpus, qrels, "options: {missing_media: drop}\n")
    (tmp_path / "lenient" / "images" / "d1.png").unlink()
    [task] = load_tasks([lenient])
    assert [(role, item_id) for role, item_id, _ in task.data.skipped] == [("candidate", "d1"), ("query", "q1")]
    assert "media file not found" in task.data.skipped[0][2] and "d1.png" in task.data.skipped[0][2]
    [result] = evaluate(encoder, [task], output_dir=tmp_path / "out", config=EvalConfig(show_progress=False))
    assert result["counts"]["queries_scored"] == 1 and result["counts"]["candidates_skipped"] == 1
    assert [s["id"] for s in result["skipped"]] == ["d1", "q1"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| lenient | recall@1 |" in summary and "| 1 | 1 | 1 | 1 |" in summary  # scored, searched, skipped q, c
    assert "over the scored queries only" in summary
    wrong = _write_task(tmp_path / "wrong", queries, corpus, qrels, "options: {missing_media: ignore}\n")
    with pytest.raises(ConfigError, match="missing_media must be one of raise, drop"):
        load_tasks([wrong])


def test_cli_reports_skips_in_summary_and_compare(legacy_checkpoint, tmp_path, capsys):
    task = _skipping_task(tmp_path / "skipping")
    out = tmp_path / "out"
    args = ["eval", "--model", str(legacy_checkpoint), "--task", str(task), "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().err
    assert re.search(r"\| skipping \| recall@1 \| [0-9.]+ \| 2 \| 3 \| 2 \| 1 \|", capsys.readouterr().out)
    assert main(["eval", "--compare", str(out / "skipping.json"), str(out / "skipping.json")]) == 0
    shown = capsys.readouterr().out
    assert "| queries skipped | 2 | 2 |" in shown and "| candidates skipped | 1 | 1 |" in shown
    assert "| queries scored | 2 | 2 |" in shown


RANKED_INSTRUCTION = "Find the picture or caption that matches:"


def _graded_task(folder: Path) -> Path:
    """Five text queries, twelve text and image candidates, two or three positives per query with grades 1 to 3."""
    queries = [{"id": f"q{i}", "text": f"caption {i} of a scene with {i + 2} objects"} for i in range(5)]
    corpus = [
        {"id": f"d{i}", "image": f"images/d{i}.png"} if i % 3 == 0 else {"id": f"d{i}", "text": f"caption {i} text"}
        for i in range(12)
    ]
    qrels = [(f"q{i}", f"d{(i * 5 + j * 7) % 12}", 1 + (i + j) % 3) for i in range(5) for j in range(2 + i % 2)]
    qrels.append(("q0", "d11", 0))  # a judged non-relevant candidate
    return _write_task(folder, queries, corpus, qrels, f"query_instruction: {json.dumps(RANKED_INSTRUCTION)}\n")


def _metrics_from_ranking(grades: list[int], judged: dict[str, int]) -> dict[str, float]:
    """One query's metrics from its ranked grades (best first) and its judgements, by the definitions."""
    first = next(position for position, grade in enumerate(grades, start=1) if grade > 0)
    dcg = sum(grade / np.log2(position + 1) for position, grade in enumerate(grades[:10], start=1))
    ideal = sorted((grade for grade in judged.values() if grade > 0), reverse=True)[:10]
    idcg = sum(grade / np.log2(position + 1) for position, grade in enumerate(ideal, start=1))
    values = {f"recall@{k}": float(first <= k) for k in (1, 5, 10)}
    return {**values, "ndcg@10": dcg / idcg, "mrr@10": 1.0 / first if first <= 10 else 0.0, "rank": first}


def test_metrics_recomputed_by_hand_from_unite_encode_and_from_the_saved_rankings(legacy_checkpoint, tmp_path):
    """`unite encode` of queries.jsonl and corpus.jsonl, cosine scores and a ranking made here give the metrics
    of `unite eval`; so does the rankings file it writes with --save-rankings, which holds the same order."""
    task = _graded_task(tmp_path / "graded")
    folder, out = task.parent, tmp_path / "out"
    model = ["--model", str(legacy_checkpoint), "--device", "cpu", "--no-progress"]
    eval_args = ["eval", "--task", str(task), "--output-dir", str(out), "--save-rankings", "--rankings-depth", "4"]
    assert main([*eval_args, *model]) == 0
    assert main(["encode", str(folder / "queries.jsonl"), "-o", str(tmp_path / "q.npy"), *model,
                 "--instruction", RANKED_INSTRUCTION]) == 0
    assert main(["encode", str(folder / "corpus.jsonl"), "-o", str(tmp_path / "c.npy"), *model]) == 0
    queries, corpus = np.load(tmp_path / "q.npy"), np.load(tmp_path / "c.npy")
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels.tsv").read_text().splitlines():
        query_id, corpus_id, grade = line.split("\t")
        qrels.setdefault(query_id, {})[corpus_id] = int(grade)
    query_ids, corpus_ids = [f"q{i}" for i in range(5)], [f"d{i}" for i in range(12)]
    result = json.loads((out / "graded.json").read_text())
    by_hand = _hand_metrics(queries, corpus, query_ids, corpus_ids, qrels)
    for name, value in by_hand.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name
    # The rankings file: what the result says about it, and every metric again from it alone.
    saved = result["rankings"]
    path = out / saved["file"]
    assert saved["depth"] == 10 and saved["queries"] == 5  # asked 4, raised to the largest cutoff (10)
    assert saved["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [record["query_id"] for record in records] == query_ids
    recomputed: dict[str, list[float]] = {}
    for row, record in enumerate(records):
        scores = corpus @ queries[row]
        judged = qrels[record["query_id"]]
        hand_order = sorted(range(12), key=lambda c: (-scores[c], judged.get(corpus_ids[c], 0) > 0))
        ranked = [candidate for candidate, _ in record["ranking"]]
        assert ranked == [corpus_ids[c] for c in hand_order][: len(ranked)]
        hand_scores = [scores[c] for c in hand_order[: len(ranked)]]
        assert [score for _, score in record["ranking"]] == pytest.approx(hand_scores, abs=1e-5)
        assert record["judged"] == judged and record["candidates"] == 12
        grades = [judged.get(candidate, 0) for candidate in ranked]
        assert len(ranked) >= 10 and any(grade > 0 for grade in grades)  # to the depth, and to the first positive
        assert record["complete"] == (len(ranked) == 12)
        for name, value in _metrics_from_ranking(grades, judged).items():
            recomputed.setdefault(name, []).append(value)
    for name in ("recall@1", "recall@5", "recall@10", "ndcg@10", "mrr@10"):
        assert result["metrics"][name] == pytest.approx(float(np.mean(recomputed[name])), abs=1e-9), name
    assert result["metrics"]["median_rank"] == float(np.median(recomputed["rank"]))


def test_rankings_of_pooled_queries_hold_their_pool_only(encoder, tmp_path):
    """With per-query pools each query is ranked against its pool: the file lists the pool, complete, and its first
    entry decides precision@1."""
    queries = [{"id": f"q{i}", "text": f"caption {i} pooled"} for i in range(3)]
    corpus = [{"id": f"d{i}", "text": f"caption {i} candidate"} for i in range(6)]
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(3)]
    task = _write_task(tmp_path / "pooled", queries, corpus, qrels, "files: {queries: queries.jsonl, corpus: "
                       "corpus.jsonl, qrels: qrels.tsv, pools: pools.jsonl}\nmain_metric: precision@1\n")
    pools = {"q0": ["d0", "d3"], "q1": ["d4", "d1", "d5"], "q2": ["d2", "d0", "d1", "d5"]}
    (task.parent / "pools.jsonl").write_text(
        "".join(json.dumps({"query_id": qid, "candidates": pool}) + "\n" for qid, pool in pools.items())
    )
    spec, folder = load_task_spec(task)
    path = tmp_path / "out" / "pooled.rankings.jsonl"
    config = EvalConfig(show_progress=False, rankings_depth=None)
    result = evaluate_task(encoder, spec, load_task_data(spec, folder), config, rankings_path=path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert result["rankings"]["depth"] == "all"
    for record in records:
        assert sorted(c for c, _ in record["ranking"]) == sorted(pools[record["query_id"]])
        assert record["complete"] and record["candidates"] == len(pools[record["query_id"]])
    first_is_positive = [record["judged"].get(record["ranking"][0][0], 0) > 0 for record in records]
    assert result["metrics"]["precision@1"] == pytest.approx(float(np.mean(first_is_positive)))
    with pytest.raises(ConfigError, match="give an output_dir"):  # rankings go beside the results
        evaluate(encoder, [task], config=EvalConfig(save_rankings=True))
    with pytest.raises(SystemExit):
        main(["eval", "--task", str(task), "--output-dir", str(tmp_path), "--rankings-depth", "0"])


def test_rankings_of_grouped_candidates_and_exclusions_give_the_metrics(encoder, tmp_path):
    """With candidates ranked in groups (a video by the best of its captions) the file ranks the groups, and a
    query's excluded candidates are not listed; the metrics recomputed from it are the result's."""
    from unite.evaluation import Entry, TaskData, TaskSpec
    from unite.types import Item

    corpus = [Entry(f"c{i}", Item(f"caption {i} of video {i // 2}")) for i in range(6)]
    queries = [Entry(f"q{i}", Item(f"a query about video {i}")) for i in range(3)]
    data = TaskData(
        queries,
        corpus,
        qrels={"q0": {"c0": 1, "c1": 1}, "q1": {"c2": 1, "c3": 1}, "q2": {"c4": 1, "c5": 1}},
        candidate_groups={f"c{i}": f"video{i // 2}" for i in range(6)},
        excluded={"q1": ["c0", "c1"]},
    ).validate()
    spec = TaskSpec(name="grouped")
    path = tmp_path / "grouped.rankings.jsonl"
    result = evaluate_task(encoder, spec, data, EvalConfig(show_progress=False), rankings_path=path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [sorted(c for c, _ in r["ranking"]) for r in records] == [
        ["video0", "video1", "video2"],
        ["video1", "video2"],  # video0's captions are excluded for q1
        ["video0", "video1", "video2"],
    ]
    assert records[0]["judged"] == {"video0": 1} and records[1]["candidates"] == 2
    recomputed = [_metrics_from_ranking([r["judged"].get(c, 0) for c, _ in r["ranking"]], r["judged"]) for r in records]
    for name in ("recall@1", "recall@5", "ndcg@10", "mrr@10"):
        assert result["metrics"][name] == pytest.approx(float(np.mean([v[name] for v in recomputed]))), name


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
    """Two real gloo processes under torchrun split the encoding and give the single-process metrics; the items
    that fail on rank 1 are reported by rank 0 as one process reports them."""
    import socket
    import subprocess
    import sys

    generic = _skipping_task(tmp_path / "task")
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
    assert [(s["role"], s["id"]) for s in second["skipped"]] == EXPECTED_SKIPS
    assert second["skipped"] == first["skipped"] and second["counts"] == first["counts"]
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
