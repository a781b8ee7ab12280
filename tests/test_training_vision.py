"""A frozen vision tower records no graph, even with gradient checkpointing (which hooks its patch embedding).

The LoRA gradients cannot depend on it: nothing in the frozen tower trains, so the gradients with gradient
checkpointing (tower run without a graph) equal those without it (where the tower never needed one).
"""

from __future__ import annotations

from pathlib import Path

import torch

from unite import Item
from unite.testing import make_image
from unite.training.arguments import load_config
from unite.training.model import build_training_model

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"


def _model(checkpoint, checkpointing: bool, train_vision: bool = False):
    torch.manual_seed(0)
    config = load_config(
        RECIPE,
        {"model_name_or_path": str(checkpoint), "gradient_checkpointing": checkpointing, "train_vision": train_vision},
    )
    model, encoder = build_training_model(config)
    if checkpointing:  # as the Trainer does at the start of training (this is what hooks the patch embedding)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, encoder


def _step(model, encoder, image_path) -> tuple[dict[str, torch.Tensor], list[bool]]:
    visual = model.base_model.model.model.visual
    graph: list[bool] = []
    handle = visual.blocks[-1].register_forward_hook(
        lambda module, inputs, output: graph.append((output if torch.is_tensor(output) else output[0]).requires_grad)
    )
    items = [Item.from_dict({"text": "<|IMAGE|> a shape", "image": str(image_path)}), Item(text="a red circle")]
    batch = encoder.processor.collate([encoder.processor.prepare(item) for item in items])
    embeddings = model(**batch)
    # the similarity of the two items: the squared norm of an L2-normalised row would be 1 whatever the weights,
    # its gradient zero up to rounding
    (embeddings[0] @ embeddings[1]).backward()
    handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, graph


def test_frozen_vision_tower_keeps_no_graph_and_lora_gradients_are_unchanged(legacy_checkpoint, tmp_path):
    image = tmp_path / "shape.png"
    make_image(64, 64, seed=3).save(image)
    plain_grads, plain_graph = _step(*_model(legacy_checkpoint, checkpointing=False), image)
    checkpointed_grads, checkpointed_graph = _step(*_model(legacy_checkpoint, checkpointing=True), image)
    assert plain_graph == [False] and checkpointed_graph == [False]
    assert plain_grads.keys() == checkpointed_grads.keys() and len(plain_grads) > 0
    assert torch.is_grad_enabled()  # the hooks gave the caller its grad mode back
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_trained_vision_tower_keeps_its_graph(legacy_checkpoint, tmp_path):
    image = tmp_path / "shape.png"
    make_image(64, 64, seed=3).save(image)
    grads, graph = _step(*_model(legacy_checkpoint, checkpointing=True, train_vision=True), image)
    assert graph == [True]
    vision = [name for name in grads if ".visual." in name and "lora_B" in name]  # lora_A's gradient is 0 at B = 0
    assert vision and all(grads[name].abs().sum() > 0 for name in vision)
