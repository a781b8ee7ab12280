"""Model FLOPs of a UNITE training step, from the model's own weights and the batch's real token counts.

Convention (the PaLM / Megatron "model FLOPs" convention, with a frozen-weight refinement):

- A matrix multiply by a weight of N parameters costs ``2 * N`` FLOPs per token it is applied to (one multiply and
  one add per weight). Only the weight matrices count (``ndim >= 2``: linear layers, the patch embedding as a
  matmul); embeddings are look-ups (0); norms, activations, biases and rotary embeddings are left out.
- Forward: ``2 * N * tokens``. Backward: the activation gradients cost ``2 * N * tokens`` wherever anything below
  needs a gradient, and the weight gradients another ``2 * N * tokens`` only for weights that train. Hence
  ``6 * N * tokens`` for a trained weight, ``4 * N * tokens`` for a frozen weight with trained weights below or
  within its layer (the LoRA'd language model: its frozen base weights still pass gradients down to earlier
  adapters), and ``2 * N * tokens`` for a frozen part with nothing trainable below it (the vision tower and merger
  without ``train_vision``: no backward at all). LoRA's own A and B weights train: ``6 * N_lora * tokens``.
- Attention scores and their weighted sum: ``4 * s**2 * d`` per layer and sequence forward for bidirectional
  attention (the vision tower, per frame of ``h * w`` patches), half of it, ``2 * s**2 * d``, for the causal
  language model; backward twice the forward.
- Tokens are the real ones: the language model's non-padding tokens per sequence, the vision tower's patches
  (the merger's tokens are the patches over ``spatial_merge_size ** 2``). Padding is therefore waste, as it is.
- Model FLOPs count one forward and one backward of the batch. Recomputation is not model work: gradient
  checkpointing recomputes the checkpointed layers' forward, and GradCache's first, gradient-free pass is a
  forward the plain step does not need. Both are added to the *hardware* FLOPs (HFU), not the model FLOPs (MFU).

MFU = model FLOPs per step / (step seconds * peak FLOP/s); HFU the same with hardware FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ParameterCounts", "StepTokens", "count_parameters", "step_flops", "step_tokens"]


@dataclass
class ParameterCounts:
    """Weight-matrix parameters (``ndim >= 2``) of each path of the model, trainable or not."""

    vision: int = 0  # patch embedding and vision blocks, applied per patch
    vision_trainable: int = 0
    merger: int = 0  # applied per merged token (patches / spatial_merge_size ** 2)
    language: int = 0  # decoder layers' base weights, applied per language token
    language_trainable: int = 0
    lora_language: int = 0  # LoRA A and B of the decoder layers (always trained)
    lora_vision: int = 0
    language_layers: int = 0
    language_attention_width: int = 0  # heads * head_dim of the queries
    vision_layers: int = 0
    vision_attention_width: int = 0
    spatial_merge_size: int = 2


@dataclass
class StepTokens:
    """Real token counts of one step (every side, every chunk)."""

    language_tokens: int = 0
    language_square_sum: int = 0  # sum over sequences of length ** 2
    vision_patches: int = 0
    vision_square_sum: int = 0  # sum over frames of (h * w) ** 2
    sequences: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    """The Qwen2-VL model holding ``visual`` and ``language_model`` (under a PeftModel or not)."""
    for module in model.modules():
        if hasattr(module, "visual") and hasattr(module, "language_model"):
            return module
    raise ValueError("no module with both .visual and .language_model in the model")


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Count the weight matrices of each path of ``model`` (a UniteQwen2VL, possibly wrapped by peft)."""
    inner = _inner(model)
    counts = ParameterCounts()
    for name, parameter in inner.visual.named_parameters():
        if parameter.ndim < 2:
            continue
        if "lora_" in name:
            counts.lora_vision += parameter.numel()
        elif name.startswith("merger."):
            counts.merger += parameter.numel()
        else:
            counts.vision += parameter.numel()
            counts.vision_trainable += parameter.numel() if parameter.requires_grad else 0
    for name, parameter in inner.language_model.named_parameters():
        if parameter.ndim < 2 or "embed_tokens" in name:
            continue
        if "lora_" in name:
            counts.lora_language += parameter.numel()
        else:
            counts.language += parameter.numel()
            counts.language_trainable += parameter.numel() if parameter.requires_grad else 0
    text = inner.language_model.config
    vision = inner.visual.config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    counts.language_layers = text.num_hidden_layers
    counts.language_attention_width = text.num_attention_heads * head_dim
    counts.vision_layers = vision.depth
    counts.vision_attention_width = getattr(vision, "embed_dim", None) or vision.hidden_size
    counts.spatial_merge_size = vision.spatial_merge_size
    return counts


def step_tokens(batches: list[dict[str, torch.Tensor]]) -> StepTokens:
    """Token counts of collated model inputs (``attention_mask``, ``image_grid_thw`` / ``video_grid_thw``)."""
    tokens = StepTokens()
    for batch in batches:
        lengths = batch["attention_mask"].sum(dim=1).long()
        tokens.sequences += int(lengths.numel())
        tokens.language_tokens += int(lengths.sum())
        tokens.language_square_sum += int((lengths**2).sum())
        for key in ("image_grid_thw", "video_grid_thw"):
            if key in batch:
                grid = batch[key].long()
                frames, per_frame = grid[:, 0], grid[:, 1] * grid[:, 2]
                tokens.vision_patches += int((frames * per_frame).sum())
                tokens.vision_square_sum += int((frames * per_frame**2).sum())
    return tokens


def step_flops(
    counts: ParameterCounts,
    tokens: StepTokens,
    *,
    gradient_checkpointing: bool = False,
    gradcache: bool = False,
) -> dict[str, float]:
    """Model and hardware FLOPs of one training step (see the module docstring for the convention)."""
    language_t, patches = tokens.language_tokens, tokens.vision_patches
    merged = patches / counts.spatial_merge_size**2
    vision_trains = counts.vision_trainable > 0 or counts.lora_vision > 0
    lm_attention = 2 * counts.language_layers * tokens.language_square_sum * counts.language_attention_width
    vision_attention = 4 * counts.vision_layers * tokens.vision_square_sum * counts.vision_attention_width

    language_forward = 2 * (counts.language + counts.lora_language) * language_t + lm_attention
    vision_forward = 2 * (counts.vision + counts.lora_vision) * patches + 2 * counts.merger * merged + vision_attention
    language_backward = (
        2 * counts.language * language_t  # activation gradients through every decoder weight
        + 2 * counts.language_trainable * language_t  # weight gradients of the weights that train
        + 4 * counts.lora_language * language_t
        + 2 * lm_attention
    )
    vision_backward = 0.0
    if vision_trains:
        vision_backward = (
            2 * counts.vision * patches
            + 2 * counts.vision_trainable * patches
            + 4 * counts.lora_vision * patches
            + 2 * counts.merger * merged  # the merger's activation gradients reach the trained tower
            + 2 * vision_attention
        )
    model = language_forward + vision_forward + language_backward + vision_backward
    recompute = 0.0
    if gradient_checkpointing:  # the checkpointed layers' forward again, in backward (the vision tower only if trained)
        recompute += language_forward + (vision_forward if vision_trains else 0.0)
    if gradcache:  # the first pass embeds everything without a graph
        recompute += language_forward + vision_forward
    return {
        "model_flops": float(model),
        "hardware_flops": float(model + recompute),
        "language_forward_flops": float(language_forward),
        "vision_forward_flops": float(vision_forward),
        "backward_flops": float(language_backward + vision_backward),
    }
