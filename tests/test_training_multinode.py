"""Training on two nodes: two ``torchrun --nnodes 2`` launchers on this machine, one process each, over gloo.

This is the launch docs/training.md gives for a cluster ("Several machines"), with 127.0.0.1 as the address of
node 0: each launcher starts its own worker, the workers meet through the store node 0 hosts, and every step's
contrastive batch is gathered over both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unite.testing import make_shapes_dataset

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"
PER_DEVICE_BATCH = 4
STEPS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_together(legacy_checkpoint, tmp_path):
    shapes = make_shapes_dataset(tmp_path / "shapes", per_class=8)
    output = tmp_path / "run"
    port = str(free_port())
    train = ["-m", "unite.cli.main", "train", "--config", str(RECIPE), "--model_name_or_path", str(legacy_checkpoint)]
    train += ["--train_data", f"[{shapes}]", "--output_dir", str(output), "--max_steps", str(STEPS)]
    train += ["--per_device_train_batch_size", str(PER_DEVICE_BATCH), "--logging_steps", "1", "--save_steps", "1000"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    nodes, logs = [], []
    for node_rank in (0, 1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        launcher += ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", port]
        logs.append(tmp_path / f"node{node_rank}.log")
        with logs[-1].open("w") as handle:
            nodes.append(
                subprocess.Popen(
                    [*launcher, *train],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
    try:
        codes = [node.wait(timeout=180) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n----\n".join(text[-3000:] for text in texts)
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["global_step"] == STEPS and np.isfinite(summary["train_loss"])
    # both nodes took part: two ranks, and the last step's contrastive batch held both ranks' pairs
    assert summary["world_size"] == 2
    assert summary["gathered_pairs"] == 2 * PER_DEVICE_BATCH
    for text in texts:  # each node's own worker trained (the per-rank epoch log)
        assert "epoch 0 target-modality share" in text
    assert "unite: trained 2 steps" in texts[0] and "unite: trained" not in texts[1]  # rank 0 reports and saves
    assert (output / "config.json").is_file() and (output / "model.safetensors").is_file()  # the final checkpoint
