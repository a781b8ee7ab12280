"""The FLOPs accounting of benchmarks/train_flops.py against counts written out by hand from the tiny config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from train_flops import count_parameters, step_flops, step_tokens  # noqa: E402

from unite.training.arguments import load_config  # noqa: E402
from unite.training.model import build_training_model  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"


def test_parameter_counts_and_step_flops_follow_the_convention(legacy_checkpoint):
    config = load_config(RECIPE, {"model_name_or_path": str(legacy_checkpoint), "lora_r": 4})
    model, _ = build_training_model(config)
    text = model.base_model.model.config.text_config
    vision = model.base_model.model.config.vision_config
    hidden, kv = text.hidden_size, text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    ffn, layers, r = text.intermediate_size, text.num_hidden_layers, 4
    # q, k, v, o, gate, up, down of each decoder layer; LoRA A (r x in) and B (out x r) on each of them
    language = layers * (hidden * hidden + 2 * hidden * kv + hidden * hidden + 3 * hidden * ffn)
    attention = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden)]
    shapes = [*attention, (hidden, ffn), (hidden, ffn), (ffn, hidden)]  # (fan in, fan out)
    lora = layers * sum(r * fan_in + fan_out * r for fan_in, fan_out in shapes)
    width, patch = vision.embed_dim, 3 * vision.temporal_patch_size * vision.patch_size**2
    mlp = int(width * vision.mlp_ratio)
    tower = width * patch + vision.depth * (3 * width * width + width * width + 2 * width * mlp)
    merged_width = width * vision.spatial_merge_size**2
    merger = merged_width * merged_width + hidden * merged_width
    counts = count_parameters(model)
    assert (counts.language, counts.lora_language, counts.language_trainable) == (language, lora, 0)
    assert (counts.vision, counts.vision_trainable, counts.merger, counts.lora_vision) == (tower, 0, merger, 0)

    # one sequence of 10 real tokens (2 padding) and one image of a single frame of 4 x 4 patches
    batch = {
        "attention_mask": torch.tensor([[0, 0] + [1] * 10]),
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
    }
    tokens = step_tokens([batch])
    assert (tokens.language_tokens, tokens.vision_patches, tokens.language_square_sum) == (10, 16, 100)
    attention_lm = 2 * layers * 100 * hidden  # causal: half of 4 s^2 d per layer
    attention_vision = 4 * vision.depth * 16**2 * width
    forward = 2 * (language + lora) * 10 + attention_lm + 2 * tower * 16 + 2 * merger * 4 + attention_vision
    # frozen base weights: activation gradients only (2N); LoRA: activation + weight gradients (4N); no vision backward
    backward = 2 * language * 10 + 4 * lora * 10 + 2 * attention_lm
    flops = step_flops(counts, tokens, gradient_checkpointing=True, gradcache=True)
    assert flops["model_flops"] == pytest.approx(forward + backward)
    language_forward = 2 * (language + lora) * 10 + attention_lm
    # recomputed: the language model's forward (checkpointing) and the whole forward again (GradCache's first pass)
    assert flops["hardware_flops"] == pytest.approx(forward + backward + language_forward + forward)
