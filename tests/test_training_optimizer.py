"""The recipe's optimizer fields reach the optimizer: AdamW betas, linear warm-up, gradient clipping.

Expected values come from the settings (Adam's (beta1, beta2), a linear warm-up ``lr * step / warmup``, a
clipped global norm at most ``max_grad_norm``), never from the trainer's own output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from unite.errors import ConfigError
from unite.losses import ContrastiveLoss
from unite.testing import make_shapes_dataset
from unite.training.arguments import load_config
from unite.training.trainer import UniteTrainer, train, training_arguments

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"
LEARNING_RATE = 1e-3
STEPS = 20


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), per_class=2)


def _config(checkpoint, data, output, **overrides):
    values = {"model_name_or_path": str(checkpoint), "train_data": [str(data)], "output_dir": str(output)}
    values.update({"learning_rate": LEARNING_RATE, "max_steps": STEPS, **overrides})
    return load_config(RECIPE, values)


def _optimizer_and_schedule(config):
    """The optimizer and schedule the Trainer builds for ``config`` (a small linear model stands for the network)."""
    model = torch.nn.Linear(4, 3)
    trainer = UniteTrainer(model=model, args=training_arguments(config), loss_module=ContrastiveLoss(), processor=None)
    trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    return trainer.optimizer, trainer.lr_scheduler


def _rates(optimizer, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_adam_beta2_reaches_every_param_group(legacy_checkpoint, shapes, tmp_path):
    config = _config(legacy_checkpoint, shapes, tmp_path, adam_beta2=0.95)
    optimizer, _ = _optimizer_and_schedule(config)
    assert len(optimizer.param_groups) >= 1
    for group in optimizer.param_groups:
        assert tuple(group["betas"]) == (0.9, 0.95)


@pytest.mark.parametrize(
    ("warmup_steps", "warmup_ratio", "expected_warmup"),
    [(4, 0.0, 4), (0, 0.25, 5), (3, 0.5, 3)],  # the last: warmup_steps > 0 takes precedence over the ratio
)
def test_linear_warmup_from_steps_or_ratio(
    legacy_checkpoint, shapes, tmp_path, warmup_steps, warmup_ratio, expected_warmup
):
    config = _config(
        legacy_checkpoint,
        shapes,
        tmp_path,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
    )
    optimizer, scheduler = _optimizer_and_schedule(config)
    rates = _rates(optimizer, scheduler, expected_warmup + 3)
    expected = [LEARNING_RATE * min(1.0, step / expected_warmup) for step in range(expected_warmup + 3)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_tiny_recipe_warms_up_with_beta2_098_and_clips(legacy_checkpoint, shapes, tmp_path):
    """The recipe's own values: rate 0 at step 0 rising linearly to its peak, beta2 0.98, clipping at norm 1."""
    recipe = load_config(RECIPE)
    assert recipe.warmup_steps > 0 and recipe.max_grad_norm > 0
    config = _config(legacy_checkpoint, shapes, tmp_path, learning_rate=recipe.learning_rate)
    optimizer, scheduler = _optimizer_and_schedule(config)
    assert all(tuple(group["betas"]) == (0.9, 0.98) for group in optimizer.param_groups)
    rates = _rates(optimizer, scheduler, recipe.warmup_steps + 2)
    peak = recipe.learning_rate
    expected = [peak * min(1.0, step / recipe.warmup_steps) for step in range(recipe.warmup_steps + 2)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)


class _NormProbe(TrainerCallback):
    """Records the global gradient norm just before each optimizer step (after the Trainer's clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.logged: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs:
            self.logged.append(float(logs["grad_norm"]))


def test_max_grad_norm_clips_the_step(legacy_checkpoint, shapes, tmp_path):
    limit = 0.01  # far below the tiny model's first gradients (their norm is logged before clipping)
    probe = _NormProbe()
    config = _config(
        legacy_checkpoint,
        shapes,
        tmp_path / "run",
        max_grad_norm=limit,
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        save_steps=1000,
    )
    train(config, callbacks=[probe])
    assert len(probe.norms) == 2 and len(probe.logged) == 2
    assert min(probe.logged) > 10 * limit  # clipping had something to do
    for norm in probe.norms:
        assert norm == pytest.approx(limit, rel=1e-3)  # clip_grad_norm_ scales the global norm to the limit


@pytest.mark.parametrize(
    ("field", "value"),
    [("warmup_ratio", 1.0), ("warmup_ratio", -0.1), ("warmup_steps", -1), ("adam_beta2", 1.0), ("max_grad_norm", -1)],
)
def test_bad_optimizer_settings_raise(field, value):
    with pytest.raises(ConfigError, match=field):
        load_config(RECIPE, {field: value})
