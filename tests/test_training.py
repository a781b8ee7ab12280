"""Training end to end on tiny checkpoints: GradCache, learning, resume, merging, data check, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from unite import UniteEncoder
from unite.cli.main import main
from unite.losses import ContrastiveLoss
from unite.testing import make_shapes_dataset
from unite.training.arguments import load_config
from unite.training.data import PairCollator, PairDataset, TrainSource
from unite.training.gradcache import RngState
from unite.training.model import build_training_model, training_settings
from unite.training.trainer import UniteTrainer, train, training_arguments

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny_cpu.yaml"
SMALL_IMAGES = {"image_min_pixels": 3136, "image_max_pixels": 50176}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(folder, per_class=8), make_shapes_dataset(folder, per_class=2, prefix="heldout", seed=1)


def _config(checkpoint, data, output, **overrides):
    values = {"model_name_or_path": str(checkpoint), "train_data": [str(data)], "output_dir": str(output)}
    values.update(overrides)
    return load_config(RECIPE, values)


def _trainer(config, gradcache):
    from unite.data.collator import ItemProcessor

    model, encoder = build_training_model(config)
    processor = ItemProcessor(encoder.tokenizer, training_settings(config, encoder.settings))
    loss = ContrastiveLoss(temperature=config.temperature, symmetric=True, modality_mask=True)
    trainer = UniteTrainer(
        model=model,
        args=training_arguments(config),
        loss_module=loss,
        processor=processor,
        gradcache_chunk_size=gradcache,
    )
    return trainer, processor


def test_gradcache_equals_plain_backward(legacy_checkpoint, shapes, tmp_path):
    config = _config(legacy_checkpoint, shapes[0], tmp_path / "out", lora_dropout=0.0)
    plain, processor = _trainer(config, gradcache=0)
    cached, _ = _trainer(config, gradcache=3)
    cached.model.load_state_dict(copy.deepcopy(plain.model.state_dict()))
    records = [json.loads(line) for line in shapes[0].read_text().splitlines()[:7]]
    for record in records:  # a hard negative per pair: another caption
        record["negative"] = {"text": "a purple hexagon"}
    path = tmp_path / "seven.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dataset = PairDataset([TrainSource(str(path))], processor, shapes[0].parent)
    batch = PairCollator()([dataset[i] for i in range(7)])
    losses = [trainer.training_step(trainer.model, dict(batch)) for trainer in (plain, cached)]
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-5)
    grads = [{n: p.grad for n, p in t.model.named_parameters() if p.requires_grad} for t in (plain, cached)]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_replayed_random_state_repeats_dropout():
    dropout = torch.nn.Dropout(0.5)
    x = torch.ones(1000)
    state = RngState()
    first = dropout(x)
    dropout(x)  # the stream moves on
    with state.replay():
        again = dropout(x)
    torch.testing.assert_close(first, again)


def test_text_only_training_step_runs_the_vision_tower(encoder):
    model = copy.deepcopy(encoder.model)
    calls = []
    model.model.visual.register_forward_hook(lambda *args: calls.append(1))
    features = [encoder.processor.prepare(__import__("unite").Item(text="only text"))]
    batch = encoder.processor.collate(features)
    model.train()
    model(**batch).sum().backward()
    assert calls == [1]
    model.eval()
    with torch.no_grad():
        model(**batch)
    assert calls == [1]


def _heldout_recall(encoder, heldout: Path) -> float:
    records = [json.loads(line) for line in heldout.read_text().splitlines()]
    images = [r for r in records if "image" in r["candidate"]]
    labels = [r["query"]["text"] for r in images]
    classes = sorted(set(labels))
    image_vectors = encoder.encode([{"image": str(heldout.parent / r["candidate"]["image"])} for r in images])
    text_vectors = encoder.encode(classes)
    best = (text_vectors @ image_vectors.T).argmax(axis=1)
    return float(np.mean([labels[b] == c for b, c in zip(best, classes)]))


@pytest.mark.slow
def test_tiny_recipe_learns_and_merged_output_encodes(legacy_checkpoint, shapes, tmp_path, capsys):
    output = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(RECIPE),
            "--model_name_or_path",
            str(legacy_checkpoint),
            "--train_data",
            f"[{shapes[0]}]",
            "--output_dir",
            str(output),
            "--max_steps",
            "40",
            "--save_steps",
            "1000",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((output / "train_summary.json").read_text())
    history = [
        entry
        for entry in json.loads((output / "checkpoint-40" / "trainer_state.json").read_text())["log_history"]
        if "loss" in entry
    ]
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert summary["modality_share_per_epoch"][0] == {"image": pytest.approx(96 / 108), "text": pytest.approx(12 / 108)}
    chance = 2 / 24
    before = _heldout_recall(UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", **SMALL_IMAGES), shapes[1])
    trained = UniteEncoder.from_pretrained(output, device="cpu")
    assert trained.settings.image_max_pixels == SMALL_IMAGES["image_max_pixels"]
    after = _heldout_recall(trained, shapes[1])
    assert after >= 3 * chance and after > before
    # The adapter merges through the CLI into the same model.
    merged = tmp_path / "merged"
    assert main(["merge-lora", str(output / "adapter"), "--base", str(legacy_checkpoint), "--output", str(merged)]) == 0
    texts = ["a red circle", "a blue square"]
    np.testing.assert_allclose(
        UniteEncoder.from_pretrained(merged, device="cpu").encode(texts), trained.encode(texts), atol=1e-5
    )


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise KeyboardInterrupt


def _adapter(output: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(output / "adapter" / "adapter_model.safetensors"))


def test_resume_gives_the_same_final_weights(legacy_checkpoint, shapes, tmp_path):
    settings = {
        "max_steps": 6,
        "save_steps": 3,
        "per_device_train_batch_size": 8,
        "lora_dropout": 0.1,
        "learnable_temperature": False,
        "merge_lora": False,
    }
    whole = _config(legacy_checkpoint, shapes[0], tmp_path / "whole", **settings)
    train(whole)
    broken = _config(legacy_checkpoint, shapes[0], tmp_path / "broken", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(broken, callbacks=[_Interrupt()])
    assert (tmp_path / "broken" / "checkpoint-3").is_dir() and not (tmp_path / "broken" / "adapter").exists()
    resumed = _config(legacy_checkpoint, shapes[0], tmp_path / "broken", resume_from_checkpoint="latest", **settings)
    summary = train(resumed)
    assert summary["global_step"] == 6
    first, second = _adapter(tmp_path / "whole"), _adapter(tmp_path / "broken")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], atol=1e-6, rtol=1e-5, msg=name)
    # merge_lora false: the output folder is an adapter with its base recorded, and it loads as a model.
    loaded = UniteEncoder.from_pretrained(tmp_path / "whole", device="cpu")
    assert loaded.encode(["a red circle"]).shape == (1, 64)


def test_data_check_reports_problems_and_memory(legacy_checkpoint, shapes, tmp_path, capsys):
    lines = shapes[0].read_text().splitlines()
    assert '"target_modal": "text"' in lines[8]
    records = lines[:5] + [lines[8], json.dumps({"query": {"text": "x"}, "candidate": {"image": "gone.png"}})]
    path = tmp_path / "check.jsonl"
    path.write_text("\n".join(records) + "\n")
    code = main(
        [
            "data",
            "check",
            str(path),
            "--media-root",
            str(shapes[0].parent),
            "--model",
            str(legacy_checkpoint),
            "--json",
            "--batch-size",
            "32",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["records"] == 7 and len(report["errors"]) == 1 and "gone.png" in report["errors"][0]["error"]
    assert report["target_modality_share"] == {"image": pytest.approx(6 / 7), "text": pytest.approx(1 / 7)}
    assert report["tokens"]["candidate.visual"]["max"] > 0 and report["tokens"]["query.visual"]["max"] == 0
    memory = report["estimated_peak_memory_gib"]
    assert memory["batch_size"] == 32 and memory["total"] > memory["weights"] > 0


def test_train_cli_refuses_bad_overrides(capsys):
    assert main(["train", "--config", str(RECIPE), "--no_such_field", "1"]) == 1
    assert "unknown setting(s) no_such_field" in capsys.readouterr().err
    assert main(["train", "--config", str(RECIPE)]) == 1
    assert "missing required setting(s): model_name_or_path, train_data" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_run_with_gathered_negatives(legacy_checkpoint, shapes, tmp_path):
    """torchrun with two CPU (gloo) processes: the Trainer's DDP path, the gather and the final save."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    output = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command = [*launcher, "--master_port", port, "-m", "unite.cli.main", "train", "--config", str(RECIPE)]
    command += ["--model_name_or_path", str(legacy_checkpoint), "--train_data", f"[{shapes[0]}]"]
    command += ["--output_dir", str(output), "--max_steps", "2", "--per_device_train_batch_size", "4"]
    command += ["--logging_steps", "1", "--save_steps", "1000"]
    log = tmp_path / "ddp.log"
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, log.read_text()[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and np.isfinite(summary["train_loss"])
    assert sum(summary["modality_share_per_epoch"][0].values()) == pytest.approx(1.0)
    assert UniteEncoder.from_pretrained(output, device="cpu").encode(["a red circle"]).shape == (1, 64)


def _mmeb_file(shapes_file: Path) -> Path:
    """MMEB-train records (qry / pos_text / pos_image_path with <|image_1|>) over the shapes images."""
    records = [json.loads(line) for line in shapes_file.read_text().splitlines()]
    lines = []
    for record in records[:16]:
        if "image" in record["candidate"]:
            lines.append(
                {
                    "qry": "<|image_1|> Represent the given image.",
                    "qry_image_path": record["candidate"]["image"],
                    "pos_text": record["query"]["text"],
                    "pos_image_path": "",
                    "neg_text": "a purple hexagon",
                    "neg_image_path": "",
                }
            )
    path = shapes_file.parent / "mmeb_train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.slow
def test_stage1_then_stage2_recipes_run(legacy_checkpoint, shapes, tmp_path):
    """Both paper recipes, shrunk to the tiny model on the CPU: stage 2 starts from stage 1's merged output."""
    recipes = RECIPE.parent
    small = [
        "--device",
        "cpu",
        "--bf16",
        "false",
        "--deepspeed",
        "",
        "--max_steps",
        "2",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "6",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--image_min_pixels",
        "3136",
        "--image_max_pixels",
        "50176",
        "--save_steps",
        "1000",
        "--media_root",
        "",
    ]
    stage1 = tmp_path / "stage1"
    assert (
        main(
            [
                "train",
                "--config",
                str(recipes / "stage1_adaptation.yaml"),
                "--model_name_or_path",
                str(legacy_checkpoint),
                "--train_data",
                f"[{shapes[0]}]",
                "--output_dir",
                str(stage1),
                *small,
            ]
        )
        == 0
    )
    mmeb = _mmeb_file(shapes[0])
    stage2 = tmp_path / "stage2"
    sources = f"[{{path: {mmeb}, format: mmeb}}, {{path: {shapes[0]}, weight: 0.5}}]"
    assert (
        main(
            [
                "train",
                "--config",
                str(recipes / "stage2_instruction.yaml"),
                "--model_name_or_path",
                str(stage1),
                "--train_data",
                sources,
                "--output_dir",
                str(stage2),
                *small,
            ]
        )
        == 0
    )
    config = json.loads((stage2 / "train_config.json").read_text())
    assert config["loss"] == "query_to_candidate" and config["modality_mask"] is True and config["lora_alpha"] == 64
    assert json.loads((stage2 / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        stage1.resolve()
    )
    vectors = UniteEncoder.from_pretrained(stage2, device="cpu").encode(["a red circle", {"text": "a blue square"}])
    assert vectors.shape == (2, 64)
