"""GradCache: contrastive batches far larger than memory allows, with the gradients of the full batch.

1. Embed every chunk without building a graph, remembering the random state before each chunk.
2. Compute the loss on the detached embeddings of the whole (gathered) batch and backpropagate to them only.
3. Embed each chunk again, with a graph and the same random state (identical dropout), and backpropagate the
   cached embedding gradients through it.

Loss and parameter gradients equal those of one plain step on the whole batch, to float tolerance, when the
forward is deterministic given the random state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["RngState", "chunks"]


class RngState:
    """The CPU and CUDA random states at one moment, to replay a forward with the same dropout."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        devices = list(range(torch.cuda.device_count())) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` cut into consecutive runs of at most ``size`` (``size`` 0: one run)."""
    if size <= 0 or size >= len(items):
        return [items] if items else []
    return [items[start : start + size] for start in range(0, len(items), size)]
