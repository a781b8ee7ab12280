"""Metrics on hand-made score matrices (expected values from the definitions) and against pytrec_eval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unite.errors import ConfigError
from unite.evaluation.metrics import aggregate, first_relevant_rank, parse_metric, query_metrics
from unite.evaluation.runner import modality_gap, rank_distribution


def test_one_relevant_per_query_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    relevance = np.array([[0, 0, 1], [1, 0, 0]])
    # query 0: only 0.9 beats its positive (0.5) -> rank 2; query 1: 0.8 and 0.3 beat 0.2 -> rank 3.
    values = query_metrics(
        scores, relevance, ["recall@1", "recall@2", "precision@1", "mrr@10", "mrr@2", "ndcg@10", "median_rank"]
    )
    assert values["median_rank"].tolist() == [2, 3]
    assert values["recall@1"].tolist() == [0, 0]
    assert values["recall@2"].tolist() == [1, 0]
    assert values["precision@1"].tolist() == [0, 0]
    assert values["mrr@10"] == pytest.approx([1 / 2, 1 / 3])
    assert values["mrr@2"] == pytest.approx([1 / 2, 0])
    assert values["ndcg@10"] == pytest.approx([1 / math.log2(3), 1 / math.log2(4)])
    summary = aggregate(values)
    assert summary["median_rank"] == 2.5
    assert summary["mrr@10"] == pytest.approx(5 / 12)


def test_graded_and_several_relevant():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    relevance = np.array([[0, 2, 1, 0]])
    values = query_metrics(scores, relevance, ["precision@2", "precision@3", "ndcg@3", "recall@1", "recall@2"])
    assert values["precision@2"][0] == pytest.approx(1 / 2)
    assert values["precision@3"][0] == pytest.approx(2 / 3)
    dcg = 2 / math.log2(3) + 1 / math.log2(4)  # grades 2 and 1 at ranks 2 and 3
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert values["ndcg@3"][0] == pytest.approx(dcg / ideal)
    # recall@k as the benchmarks define it: any relevant item among the first k.
    assert values["recall@1"][0] == 0 and values["recall@2"][0] == 1


def test_ties_are_pessimistic_and_padding_ranks_last():
    collapsed = np.full((1, 4), 0.3)
    relevance = np.array([[1, 0, 0, 0]])
    values = query_metrics(collapsed, relevance, ["recall@1", "precision@1", "ndcg@10", "median_rank"])
    assert values["median_rank"][0] == 4  # behind the three equal negatives
    assert values["recall@1"][0] == 0 and values["precision@1"][0] == 0
    assert values["ndcg@10"][0] == pytest.approx(1 / math.log2(5))
    padded = np.array([[0.1, 0.5, -np.inf]])
    assert first_relevant_rank(padded, np.array([[1, 0, 0]])).tolist() == [2]
    # A tie between two relevant items does not push the query down.
    assert first_relevant_rank(np.array([[0.5, 0.5, 0.1]]), np.array([[1, 1, 0]])).tolist() == [1]


def test_fewer_candidates_than_the_cutoff():
    values = query_metrics(np.array([[0.2, 0.9]]), np.array([[1, 0]]), ["precision@5", "recall@10", "ndcg@10"])
    assert values["precision@5"][0] == pytest.approx(1 / 5)  # trec_eval divides by k
    assert values["recall@10"][0] == 1
    assert values["ndcg@10"][0] == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("name", ["recal@1", "ndcg@0", "ndcg", "map@10", "median", 5])
def test_unknown_metric_names_are_refused(name):
    with pytest.raises(ConfigError, match="metric"):
        parse_metric(name)


def test_query_without_relevant_candidate_is_an_error():
    with pytest.raises(ValueError, match="relevant"):
        first_relevant_rank(np.array([[0.1, 0.2]]), np.array([[0, 0]]))


def test_agreement_with_pytrec_eval_on_random_runs():
    import pytrec_eval  # the dev extra installs it (pytrec-eval-terrier)

    rng = np.random.default_rng(0)
    for trial in range(5):
        queries, candidates = 25, 40
        scores = rng.standard_normal((queries, candidates))
        relevance = rng.choice([0, 0, 0, 0, 0, 1, 2], size=(queries, candidates))
        relevance[np.arange(queries), rng.integers(0, candidates, queries)] = 1 + trial % 2
        qrels = {
            f"q{i}": {f"d{j}": int(relevance[i, j]) for j in range(candidates) if relevance[i, j]}
            for i in range(queries)
        }
        run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(candidates)} for i in range(queries)}
        measures = {"success_1", "success_5", "success_10", "P_1", "P_5", "P_10", "ndcg_cut_10", "recip_rank"}
        reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        names = ["recall@1", "recall@5", "recall@10", "precision@1", "precision@5", "precision@10", "ndcg@10"]
        ours = query_metrics(scores, relevance, [*names, f"mrr@{candidates}"])
        pairs = dict(zip(names, ["success_1", "success_5", "success_10", "P_1", "P_5", "P_10", "ndcg_cut_10"]))
        pairs[f"mrr@{candidates}"] = "recip_rank"
        for ours_name, trec_name in pairs.items():
            expected = [reference[f"q{i}"][trec_name] for i in range(queries)]
            assert ours[ours_name] == pytest.approx(expected, abs=1e-6), (trial, ours_name)


def test_modality_gap_and_rank_distribution_by_hand():
    queries = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    candidates = np.array([[0.0, 1.0], [0.6, 0.8]])
    gap = modality_gap(queries, ["text", "text", "image"], candidates, ["image", "text"])
    assert gap["query:text -> candidate:image"] == pytest.approx(math.sqrt(2))
    assert gap["query:text -> candidate:text"] == pytest.approx(math.hypot(0.4, 0.8))
    assert gap["query:image -> candidate:image"] == pytest.approx(0.0)
    distribution = rank_distribution(np.array([1, 1, 3, 7, 200]))
    assert distribution["buckets"] == {"1": 2, "2-5": 1, "6-10": 1, "11-50": 0, "51-100": 0, ">100": 1}
    assert distribution["p50"] == 3
