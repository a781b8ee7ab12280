"""Contrastive losses as small modules over embeddings (not batches)."""

from __future__ import annotations

import math

import torch
from torch import nn

from unite.losses.functional import candidate_masks, info_nce, modality_valid

__all__ = ["ContrastiveLoss", "DEFAULT_TEMPERATURE"]

DEFAULT_TEMPERATURE = 0.03


class ContrastiveLoss(nn.Module):
    """InfoNCE with in-batch and hard negatives, optional symmetry and the modality-aware mask (MAMCL).

    Args:
        temperature: the softmax temperature (0.03 in the paper).
        symmetric: add the candidate-to-query direction and average the two.
        modality_mask: MAMCL: a candidate (in-batch or hard negative) counts as a negative of a query only when
            their pairs' target modalities are equal; the positive is never masked. Applied to both directions.
        paper_variant: reproduce the public code exactly: the mask applies to the query-to-candidate direction
            only and hard negatives are never masked.
        learnable_temperature: learn the logit scale (initialised at 1 / temperature, CLIP-style).
    """

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        symmetric: bool = False,
        modality_mask: bool = False,
        paper_variant: bool = False,
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)
        self.symmetric = symmetric
        self.modality_mask = modality_mask
        self.paper_variant = paper_variant

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_scale.detach()))

    def forward(
        self,
        query: torch.Tensor,
        candidate: torch.Tensor,
        ids: torch.Tensor | None = None,
        target_modality: torch.Tensor | None = None,
        negative: torch.Tensor | None = None,
        negative_owner: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for B pairs.

        Args:
            query: (B, D) query embeddings.
            candidate: (B, D) the positive candidate of each query.
            ids: (B,) sample ids (default: all distinct); equal ids are positives of each other.
            target_modality: (B,) target-modality bits of each pair; needed with ``modality_mask``.
            negative: (M, D) hard negatives, any number per query.
            negative_owner: (M,) the pair row each hard negative belongs to.

        Returns:
            ``loss`` (scalar) and, for logging, ``loss_query_to_candidate``, ``loss_candidate_to_query``
            (symmetric only), ``accuracy`` (top-1 of query to candidate), ``temperature``, ``masked_fraction``.
        """
        batch = query.shape[0]
        if ids is None:
            ids = torch.arange(batch, device=query.device)
        if self.modality_mask and target_modality is None:
            raise ValueError("modality_mask needs the target modality of every pair")
        if (negative is None) != (negative_owner is None):
            raise ValueError("hard negatives need their owners (negative_owner) and the other way round")
        columns = candidate if negative is None else torch.cat([candidate, negative])
        positives, owners = candidate_masks(ids, negative_owner)
        scale = self.log_scale.exp()
        scores = scale.to(query.dtype) * (query @ columns.T)
        valid = None
        if self.modality_mask:
            valid = modality_valid(target_modality, target_modality[owners])
            if self.paper_variant:
                valid[:, batch:] = True
        forward_loss = info_nce(scores, positives, valid)
        terms = {"loss_query_to_candidate": forward_loss.mean()}
        loss = terms["loss_query_to_candidate"]
        if self.symmetric:
            backward_valid = None
            if self.modality_mask and not self.paper_variant:
                backward_valid = modality_valid(target_modality, target_modality)
            backward_loss = info_nce(scores[:, :batch].T, positives[:, :batch].T, backward_valid)
            terms["loss_candidate_to_query"] = backward_loss.mean()
            loss = (loss + terms["loss_candidate_to_query"]) / 2
        with torch.no_grad():
            best = scores.argmax(dim=1)
            terms["accuracy"] = positives[torch.arange(batch, device=query.device), best].float().mean()
            terms["temperature"] = torch.exp(-self.log_scale.detach())
            terms["masked_fraction"] = (
                (~(valid | positives)).float().mean() if valid is not None else torch.zeros((), device=query.device)
            )
        terms["loss"] = loss
        return terms
