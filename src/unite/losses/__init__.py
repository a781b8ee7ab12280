"""What is optimised: contrastive losses over embeddings, and the gather of embeddings across ranks."""

from unite.losses.contrastive import DEFAULT_TEMPERATURE, ContrastiveLoss
from unite.losses.distributed import gather_batch, gather_with_local_grad
from unite.losses.functional import candidate_masks, info_nce, modality_valid

__all__ = [
    "DEFAULT_TEMPERATURE",
    "ContrastiveLoss",
    "candidate_masks",
    "gather_batch",
    "gather_with_local_grad",
    "info_nce",
    "modality_valid",
]
