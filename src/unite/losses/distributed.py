"""Gathering embeddings across ranks, with one gradient convention.

Convention (the only one in unite): every rank gathers the embeddings, ids and target modalities of all ranks and
computes the loss of the whole global batch; autograd reaches only the rank's own slice, which is the rank's
local tensor put back in its place. Since the whole loss is computed on every rank, the gradient a rank gets for
its own slice is the full derivative of the global loss with respect to it. Data-parallel engines (DDP,
DeepSpeed, FSDP) then *average* parameter gradients over ranks, so the trainer multiplies the loss by the world
size before backward: the parameter gradients then equal those of one process on the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_batch", "gather_with_local_grad", "world_size"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order; only the local slice keeps its gradient.

    Ranks may hold different numbers of rows. Without an initialised process group this returns ``tensor``.
    """
    if world_size() == 1:
        return tensor
    rank = dist.get_rank()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.detach()
    if padded.shape[0] < longest:
        filler = padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))
        padded = torch.cat([padded, filler])
    pieces = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(pieces, padded.contiguous())
    pieces = [piece[: int(s.item())] for piece, s in zip(pieces, sizes)]
    pieces[rank] = tensor
    return torch.cat(pieces)


def gather_batch(
    query: torch.Tensor,
    candidate: torch.Tensor,
    ids: torch.Tensor,
    target_modality: torch.Tensor,
    negative: torch.Tensor | None = None,
    negative_owner: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """Gather one contrastive batch across ranks under the convention above.

    ``negative_owner`` holds local pair rows; the gathered owners point at global rows (the rows of earlier
    ranks come first). ``ids`` must already be unique across ranks for distinct samples.

    Returns:
        ``query``, ``candidate``, ``ids``, ``target_modality``, ``negative``, ``negative_owner`` of the global batch.
    """
    out: dict[str, torch.Tensor | None] = {
        "query": gather_with_local_grad(query),
        "candidate": gather_with_local_grad(candidate),
        "ids": gather_with_local_grad(ids),
        "target_modality": gather_with_local_grad(target_modality),
        "negative": None,
        "negative_owner": None,
    }
    if negative is not None and negative_owner is not None:
        offset = _row_offset(query.shape[0], query.device)
        out["negative"] = gather_with_local_grad(negative)
        out["negative_owner"] = gather_with_local_grad(negative_owner + offset)
    return out


def _row_offset(rows: int, device: torch.device) -> int:
    if world_size() == 1:
        return 0
    size = torch.tensor([rows], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return int(sum(s.item() for s in sizes[: dist.get_rank()]))
