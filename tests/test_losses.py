"""Contrastive losses on hand-computable cases, in low precision, and across two gloo processes."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unite.losses import ContrastiveLoss, gather_batch
from unite.losses.distributed import world_size

TEXT, IMAGE, VIDEO = 1, 2, 4


def _loss(**kwargs):
    return ContrastiveLoss(temperature=1.0, **kwargs)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("batch", [2, 5, 16])
def test_all_zero_embeddings_give_log_batch(batch, symmetric):
    zeros = torch.zeros(batch, 8)
    terms = ContrastiveLoss(symmetric=symmetric)(zeros, zeros)
    assert terms["loss"].item() == pytest.approx(math.log(batch), rel=1e-6)


def _three_pairs():
    # Unit vectors so that every similarity is a chosen number (temperature 1 keeps the scores as they are).
    query = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    candidate = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.0], [0.5, 0.1, 0.7]])
    return query, candidate  # score[i][j] = candidate[j][i]


def test_three_by_three_mamcl_by_hand():
    query, candidate = _three_pairs()
    modality = torch.tensor([TEXT, IMAGE, TEXT])
    e = math.exp
    # scores s[i][j] = candidate[j][i]:
    # row 0: 0.9 0.3 0.5 ; row 1: 0.2 0.8 0.1 ; row 2: 0.1 0.0 0.7
    # query 0 (text): negatives allowed: pair 2 (text); pair 1 (image) masked.
    row0 = -math.log(e(0.9) / (e(0.9) + e(0.5)))
    # query 1 (image): no other image pair: only its positive remains -> loss 0.
    row1 = 0.0
    # query 2 (text): allowed: pair 0 (text).
    row2 = -math.log(e(0.7) / (e(0.7) + e(0.1)))
    terms = _loss(modality_mask=True)(query, candidate, target_modality=modality)
    assert terms["loss"].item() == pytest.approx((row0 + row1 + row2) / 3, abs=1e-6)
    assert terms["masked_fraction"].item() == pytest.approx(4 / 9)
    # Without the mask every row keeps all three candidates.
    p0 = -math.log(e(0.9) / (e(0.9) + e(0.3) + e(0.5)))
    p1 = -math.log(e(0.8) / (e(0.2) + e(0.8) + e(0.1)))
    p2 = -math.log(e(0.7) / (e(0.1) + e(0.0) + e(0.7)))
    plain = _loss()(query, candidate)
    assert plain["loss"].item() == pytest.approx((p0 + p1 + p2) / 3, abs=1e-6)


def test_symmetric_mask_applies_to_both_directions_unless_paper_variant():
    query, candidate = _three_pairs()
    modality = torch.tensor([TEXT, IMAGE, TEXT])
    e = math.exp
    # candidate-to-query: column j of s; candidate 0 (text) vs queries 0, 2: s00=0.9, s20=0.1
    c0 = -math.log(e(0.9) / (e(0.9) + e(0.1)))
    c1 = 0.0
    c2 = -math.log(e(0.7) / (e(0.7) + e(0.5)))  # candidate 2 vs queries 2 (0.7), 0 (0.5)
    masked = _loss(symmetric=True, modality_mask=True)(query, candidate, target_modality=modality)
    assert masked["loss_candidate_to_query"].item() == pytest.approx((c0 + c1 + c2) / 3, abs=1e-6)
    paper = _loss(symmetric=True, modality_mask=True, paper_variant=True)(query, candidate, target_modality=modality)
    # Paper variant: the candidate-to-query direction keeps every query in the softmax.
    p0 = -math.log(e(0.9) / (e(0.9) + e(0.2) + e(0.1)))
    p1 = -math.log(e(0.8) / (e(0.3) + e(0.8) + e(0.0)))
    p2 = -math.log(e(0.7) / (e(0.5) + e(0.1) + e(0.7)))
    assert paper["loss_candidate_to_query"].item() == pytest.approx((p0 + p1 + p2) / 3, abs=1e-6)
    assert paper["loss_query_to_candidate"].item() == pytest.approx(masked["loss_query_to_candidate"].item())


def test_hard_negatives_are_extra_columns_and_masked_unless_paper_variant():
    query, candidate = _three_pairs()
    negative = torch.tensor([[0.4, 0.0, 0.0], [0.0, 0.0, 0.6]])  # owned by pair 1 (image) and pair 2 (text)
    owner = torch.tensor([1, 2])
    modality = torch.tensor([TEXT, IMAGE, TEXT])
    e = math.exp
    # negative scores: row 0 -> [0.4, 0.0]; row 1 -> [0.0, 0.0]; row 2 -> [0.0, 0.6]
    plain = _loss()(query, candidate, negative=negative, negative_owner=owner)
    r0 = -math.log(e(0.9) / (e(0.9) + e(0.3) + e(0.5) + e(0.4) + e(0.0)))
    r1 = -math.log(e(0.8) / (e(0.2) + e(0.8) + e(0.1) + e(0.0) + e(0.0)))
    r2 = -math.log(e(0.7) / (e(0.1) + e(0.0) + e(0.7) + e(0.0) + e(0.6)))
    assert plain["loss"].item() == pytest.approx((r0 + r1 + r2) / 3, abs=1e-6)
    masked = _loss(modality_mask=True)(
        query, candidate, target_modality=modality, negative=negative, negative_owner=owner
    )
    m0 = -math.log(e(0.9) / (e(0.9) + e(0.5) + e(0.0)))  # text: pair 2 and pair 2's negative
    m1 = -math.log(e(0.8) / (e(0.8) + e(0.0)))  # image: only its own negative
    m2 = -math.log(e(0.7) / (e(0.1) + e(0.7) + e(0.6)))
    assert masked["loss"].item() == pytest.approx((m0 + m1 + m2) / 3, abs=1e-6)
    paper = _loss(modality_mask=True, paper_variant=True)(
        query, candidate, target_modality=modality, negative=negative, negative_owner=owner
    )
    q0 = -math.log(e(0.9) / (e(0.9) + e(0.5) + e(0.4) + e(0.0)))
    q1 = -math.log(e(0.8) / (e(0.8) + e(0.0) + e(0.0)))
    q2 = -math.log(e(0.7) / (e(0.1) + e(0.7) + e(0.0) + e(0.6)))
    assert paper["loss"].item() == pytest.approx((q0 + q1 + q2) / 3, abs=1e-6)


def test_shared_ids_are_positives_not_negatives():
    query, candidate = _three_pairs()
    ids = torch.tensor([7, 7, 8])
    e = math.exp
    r0 = -math.log((e(0.9) + e(0.3)) / (e(0.9) + e(0.3) + e(0.5)))
    r1 = -math.log((e(0.2) + e(0.8)) / (e(0.2) + e(0.8) + e(0.1)))
    r2 = -math.log(e(0.7) / (e(0.1) + e(0.0) + e(0.7)))
    assert _loss()(query, candidate, ids=ids)["loss"].item() == pytest.approx((r0 + r1 + r2) / 3, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_with_fully_masked_rows_stays_finite(dtype):
    generator = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    candidate = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    modality = torch.tensor([TEXT, IMAGE, VIDEO, TEXT | IMAGE, TEXT, IMAGE])  # rows 2 and 3: only their positive
    loss = ContrastiveLoss(symmetric=True, modality_mask=True)
    low = loss(query.to(dtype), candidate.to(dtype), target_modality=modality)
    full = loss(query, candidate, target_modality=modality)
    assert torch.isfinite(low["loss"]) and low["loss"].dtype == torch.float32
    assert low["loss"].item() == pytest.approx(full["loss"].item(), rel=0.05)


def test_learnable_temperature_gets_a_gradient():
    loss = ContrastiveLoss(temperature=0.05, learnable_temperature=True)
    assert loss.temperature == pytest.approx(0.05)
    query = torch.randn(4, 8, requires_grad=True)
    loss(query, torch.randn(4, 8))["loss"].backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs().item() > 0


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _batch(seed: int = 0, rows: int = 8, dim: int = 12):
    generator = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    return {
        "query": norm(torch.randn(rows, dim, generator=generator), dim=-1),
        "candidate": norm(torch.randn(rows, dim, generator=generator), dim=-1),
        "negative": norm(torch.randn(rows // 2, dim, generator=generator), dim=-1),
        "negative_owner": torch.tensor([0, 1, 5, 6]),
        "ids": torch.tensor([0, 1, 2, 3, 3, 5, 6, 7]),
        "target_modality": torch.tensor([TEXT, IMAGE, IMAGE, VIDEO, VIDEO, TEXT, TEXT | IMAGE, IMAGE]),
    }


def _run(loss: ContrastiveLoss, batch: dict, rows: slice | None = None):
    """Loss and gradients of query/candidate/negative for the given local rows (None: all rows)."""
    local = dict(batch)
    if rows is not None:
        keep = torch.arange(batch["query"].shape[0])[rows]
        local = {key: batch[key][keep] for key in ("query", "candidate", "ids", "target_modality")}
        mine = (batch["negative_owner"] >= keep[0]) & (batch["negative_owner"] <= keep[-1])
        local["negative"] = batch["negative"][mine]
        local["negative_owner"] = batch["negative_owner"][mine] - keep[0]
    leaves = {key: local[key].clone().requires_grad_(True) for key in ("query", "candidate", "negative")}
    gathered = gather_batch(
        leaves["query"],
        leaves["candidate"],
        local["ids"],
        local["target_modality"],
        leaves["negative"],
        local["negative_owner"],
    )
    terms = loss(**gathered)
    terms["loss"].backward()
    return terms["loss"].item(), {key: leaf.grad for key, leaf in leaves.items()}


SETTINGS = [
    {"symmetric": True},
    {"symmetric": True, "modality_mask": True},
    {"symmetric": False, "modality_mask": True, "paper_variant": True},
]


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        assert world_size() == 2
        rows = slice(0, 4) if rank == 0 else slice(4, 8)
        for index, settings in enumerate(SETTINGS):
            loss, grads = _run(ContrastiveLoss(**settings), _batch(), rows)
            queue.put((index, rank, loss, {key: value.numpy() for key, value in grads.items()}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results():
    """Run the losses of SETTINGS in two gloo processes, each holding half of the batch."""
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [context.Process(target=_worker, args=(rank, _free_port_once(), queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    for _ in range(2 * len(SETTINGS)):
        index, rank, loss, grads = queue.get()
        results[index, rank] = (loss, grads)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


_PORT: list[int] = []


def _free_port_once() -> int:
    if not _PORT:
        _PORT.append(_free_port())
    return _PORT[0]


@pytest.mark.parametrize("index", range(len(SETTINGS)))
def test_two_gloo_processes_equal_one_process_on_the_full_batch(two_process_results, index):
    full_loss, full_grads = _run(ContrastiveLoss(**SETTINGS[index]), _batch())
    results = {rank: two_process_results[index, rank] for rank in (0, 1)}
    for rank in (0, 1):
        assert results[rank][0] == pytest.approx(full_loss, abs=1e-6)
    for key in ("query", "candidate"):
        joined = torch.cat([torch.from_numpy(results[rank][1][key]) for rank in (0, 1)])
        torch.testing.assert_close(joined, full_grads[key], atol=1e-6, rtol=1e-5)
    owners = _batch()["negative_owner"]
    joined = torch.cat([torch.from_numpy(results[rank][1]["negative"]) for rank in (0, 1)])
    order = torch.cat([torch.nonzero(owners < 4).flatten(), torch.nonzero(owners >= 4).flatten()])
    torch.testing.assert_close(joined, full_grads["negative"][order], atol=1e-6, rtol=1e-5)
