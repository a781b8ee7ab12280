"""Model set-up for training: strict loading, LoRA or full fine-tuning, frozen vision tower."""

from __future__ import annotations

import logging
from typing import Any

import torch

from unite.errors import ConfigError
from unite.models.encoder import UniteEncoder
from unite.settings import Truncation
from unite.training.arguments import TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "LANGUAGE_LORA_TARGETS",
    "VISION_LORA_TARGETS",
    "build_training_model",
    "merge_adapter",
    "run_without_graph",
    "training_settings",
]

#: Every linear layer of the language model: attention q, k, v, o and MLP gate, up, down. Not lm_head.
LANGUAGE_LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
#: The vision tower's linear layers (only with train_vision); the merger stays frozen.
VISION_LORA_TARGETS = r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"


def training_settings(config: TrainConfig, base: Any) -> Any:
    """Encoding settings for training items: the recipe's media bounds, left truncation at ``max_length``."""
    return base.replace(
        video_fps=config.video_fps,
        video_min_frames=config.video_min_frames,
        video_max_frames=config.video_max_frames,
        video_max_pixels=config.video_max_pixels,
        image_min_pixels=config.image_min_pixels,
        image_max_pixels=config.image_max_pixels,
        max_length=config.max_length,
        truncation=Truncation.LEFT,
        position_scheme=config.position_scheme,
    )


def build_training_model(config: TrainConfig) -> tuple[torch.nn.Module, UniteEncoder]:
    """Load the start checkpoint strictly and make the trainable part.

    Returns:
        (model to train: a PeftModel with LoRA or the UniteQwen2VL itself, the encoder it came from).
    """
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    encoder = UniteEncoder.from_pretrained(config.model_name_or_path, device="cpu", dtype=dtype)
    encoder.model.position_scheme = config.position_scheme
    model = encoder.model
    model.config.use_cache = False
    if config.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ConfigError("LoRA training needs peft: pip install 'unite-embed[train]'") from None
        targets = LANGUAGE_LORA_TARGETS + (f"|{VISION_LORA_TARGETS}" if config.train_vision else "")
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            bias="none",
        )
        model = get_peft_model(model, lora)
    else:
        for parameter in model.model.visual.parameters():
            parameter.requires_grad_(config.train_vision)
    if not config.train_vision:
        run_without_graph(encoder.model.model.visual)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model, encoder


class _NoGraph:
    """Forward hooks that run a module with autograd off and restore the caller's mode after (even on error)."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def enter(self, *_: Any) -> None:
        self.modes.append(torch.is_grad_enabled())
        torch.set_grad_enabled(False)

    def leave(self, *_: Any) -> None:
        torch.set_grad_enabled(self.modes.pop())


def run_without_graph(module: torch.nn.Module) -> None:
    """Run a frozen ``module`` (the vision tower without ``train_vision``) without recording a graph.

    Nothing in it trains, yet with gradient checkpointing the Trainer and peft call ``enable_input_require_grads``,
    which hooks every sub-model's input embedding, the vision patch embedding included: the whole frozen tower then
    kept its activations, was recomputed and backpropagated every step, for gradients nobody reads. Its output is
    the same; only the graph is gone.
    """
    hooks = _NoGraph()
    module.register_forward_pre_hook(hooks.enter)
    module.register_forward_hook(hooks.leave, always_call=True)


def merge_adapter(adapter: str, base: str, output: str, device: str | None = None) -> UniteEncoder:
    """Load ``base`` strictly, apply the LoRA ``adapter``, merge it, and save a plain checkpoint to ``output``."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ConfigError("merging LoRA needs peft: pip install 'unite-embed[train]'") from None
    encoder = UniteEncoder.from_pretrained(base, device=device or "cpu")
    try:
        peft_model = PeftModel.from_pretrained(encoder.model, adapter)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{adapter}: cannot load the LoRA adapter onto {base} ({error})") from None
    merged = UniteEncoder(peft_model.merge_and_unload(), encoder.tokenizer, encoder.settings, name_or_path=output)
    merged.save_pretrained(output)
    return merged
