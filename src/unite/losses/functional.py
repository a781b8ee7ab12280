"""The maths of the contrastive losses, as pure functions over embeddings and masks."""

from __future__ import annotations

import torch

__all__ = ["candidate_masks", "info_nce", "modality_valid"]


def info_nce(scores: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-positive InfoNCE per row: ``-log(sum_pos exp(s) / sum_valid exp(s))``.

    Args:
        scores: (B, N) logits (similarities divided by the temperature).
        positives: (B, N) bool, the positives of each row; every row needs at least one.
        valid: (B, N) bool, the entries allowed in the denominator; positives are always allowed. ``None``: all.

    Returns:
        (B,) float32 losses. Excluded entries are filled with the lowest value of ``scores``' dtype rather than
        a constant such as -1e9, so the result stays finite in float16 and bfloat16, even for a row whose only
        allowed entry is its positive.
    """
    allowed = torch.ones_like(positives) if valid is None else (valid | positives)
    lowest = torch.finfo(scores.dtype).min
    denominator = torch.logsumexp(scores.masked_fill(~allowed, lowest).float(), dim=-1)
    numerator = torch.logsumexp(scores.masked_fill(~positives, lowest).float(), dim=-1)
    return denominator - numerator


def modality_valid(query_modality: torch.Tensor, candidate_modality: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: candidate j may be a negative of query i only when their target modalities are equal (MAMCL).

    Args:
        query_modality: (B,) target-modality bits of each query's pair (text=1, image=2, video=4).
        candidate_modality: (N,) target-modality bits of the pair each candidate belongs to.
    """
    return query_modality[:, None] == candidate_modality[None, :]


def candidate_masks(ids: torch.Tensor, negative_owner: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives of the query-to-candidate matrix whose columns are [in-batch candidates, hard negatives].

    Args:
        ids: (B,) sample ids; pairs that share an id are each other's positives, never negatives.
        negative_owner: (M,) for each hard negative, the row of the pair it belongs to; ``None``: no negatives.

    Returns:
        positives: (B, B + M) bool. owners: (B + M,) the pair row each column belongs to.
    """
    batch = ids.shape[0]
    same = ids[:, None] == ids[None, :]
    count = 0 if negative_owner is None else negative_owner.shape[0]
    positives = torch.cat([same, torch.zeros(batch, count, dtype=torch.bool, device=ids.device)], dim=1)
    rows = torch.arange(batch, device=ids.device)
    owners = rows if negative_owner is None else torch.cat([rows, negative_owner.to(ids.device)])
    return positives, owners
