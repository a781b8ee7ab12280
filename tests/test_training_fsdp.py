"""FSDP on the CPU.

What torch 2.13 and the engines do with FSDP on the CPU (gloo), found by running them:

- FSDP1 (``FullyShardedDataParallel(module, device_id=None)``) refuses: ``RuntimeError: FSDP needs a non-CPU
  accelerator device, but no accelerator device is detected.``
- FSDP2 (``torch.distributed.fsdp.fully_shard``) shards and trains over gloo.
- The Hugging Face Trainer's ``fsdp`` option goes through accelerate, which builds FSDP only for a process group of
  accelerators: on ``MULTI_CPU`` it drops the plugin and the run is plain DDP, silently. ``unite train`` therefore
  refuses ``fsdp`` on the CPU with a :class:`ConfigError` (first test).

The second test is the model's side of FSDP: two gloo processes shard the tiny LoRA model with FSDP2 (every
decoder layer, every vision block, the root) and take the same three steps of the tiny recipe as two DDP
processes, with the global contrastive batch gathered over both; the losses and the trained adapter agree to
float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from unite.errors import ConfigError
from unite.testing import make_shapes_dataset
from unite.training.arguments import load_config
from unite.training.trainer import train

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"

# Run by torchrun on each of two ranks: three steps under DDP, then the same three steps under FSDP2.
WORKER = r"""
import json, sys
import torch
import torch.distributed as dist
from transformers import set_seed
from unite.data.collator import ItemProcessor
from unite.losses import ContrastiveLoss, gather_batch
from unite.training.arguments import load_config
from unite.training.data import PairCollator, PairDataset, TrainSource
from unite.training.model import build_training_model, training_settings

STEPS, PER_RANK = 3, 4
recipe, overrides, output = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
config = load_config(recipe, overrides)


def run(mode):
    set_seed(config.seed)
    model, encoder = build_training_model(config)
    model.train()
    processor = ItemProcessor(encoder.tokenizer, training_settings(config, encoder.settings))
    dataset = PairDataset([TrainSource(entry) for entry in config.train_data], processor)
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor
        inner = model.base_model.model.model
        for layer in [*inner.language_model.layers, *inner.visual.blocks]:
            fully_shard(layer)
        wrapped = fully_shard(model)
        assert all(isinstance(p, DTensor) for p in model.parameters())
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, betas=(0.9, config.adam_beta2))
    loss_module = ContrastiveLoss(temperature=config.temperature, symmetric=True, modality_mask=True)
    losses = []
    for step in range(STEPS):
        start = (step * world + rank) * PER_RANK  # each rank its own slice of the step's global batch
        batch = PairCollator()([dataset[i] for i in range(start, start + PER_RANK)])
        sides = {side: wrapped(**processor.collate(batch[side])) for side in ("query", "candidate")}
        gathered = gather_batch(sides["query"], sides["candidate"], batch["ids"], batch["target_modality"])
        loss = loss_module(**gathered)["loss"]
        (loss * world).backward()  # the trainer's convention: the engines average gradients over ranks
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    adapter = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            full = parameter.full_tensor() if mode == "fsdp" else parameter.detach()
            adapter[name] = full.flatten()[:64].tolist()
    return {"losses": losses, "adapter": adapter}


report = {mode: run(mode) for mode in ("ddp", "fsdp")}
with open(f"{output}/rank{rank}.json", "w") as handle:
    json.dump(report, handle)
dist.barrier()
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_trainer_refuses_fsdp_on_the_cpu(legacy_checkpoint, tmp_path):
    """accelerate would drop the FSDP plugin on the CPU and train unsharded; unite train says so instead."""
    data = make_shapes_dataset(tmp_path / "shapes", per_class=1)
    config = load_config(
        RECIPE,
        {
            "model_name_or_path": str(legacy_checkpoint),
            "train_data": [str(data)],
            "output_dir": str(tmp_path / "out"),
            "fsdp": "full_shard auto_wrap",
        },
    )
    with pytest.raises(ConfigError, match="fsdp is set but the engine would not shard"):
        train(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fully_shard_on_two_gloo_processes_equals_ddp(legacy_checkpoint, tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", per_class=4)  # 60 records; three steps use 24
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    overrides = {"model_name_or_path": str(legacy_checkpoint), "train_data": [str(data)], "output_dir": str(tmp_path)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    command = [*launcher, str(worker), str(RECIPE), json.dumps(overrides), str(tmp_path)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log = tmp_path / "run.log"
    with log.open("w") as handle:
        done = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=240
        )
    assert done.returncode == 0, log.read_text()[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in ranks:
        ddp, fsdp = report["ddp"], report["fsdp"]
        assert len(ddp["losses"]) == 3 and ddp["losses"][0] != ddp["losses"][2]  # the weights moved
        assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5, abs=1e-6)
        assert fsdp["adapter"].keys() == ddp["adapter"].keys() and len(ddp["adapter"]) > 0
        for name, values in ddp["adapter"].items():
            assert fsdp["adapter"][name] == pytest.approx(values, rel=1e-4, abs=1e-6), name
    assert ranks[0]["fsdp"]["losses"] == ranks[1]["fsdp"]["losses"]  # every rank's loss is the global batch's
