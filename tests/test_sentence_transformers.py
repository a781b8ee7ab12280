"""UNITE through sentence-transformers: export, load, encode as unite does, prompts, one training step, save/reload.

The reference for every embedding is :class:`unite.UniteEncoder` on the same items (the faithful pipeline, tested
against the rules in test_encoder / test_media / test_prompts); the prompt placement is checked against the
template of docs/reference.md section 3 written out by hand.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers import SentenceTransformerTrainingArguments as TrainingArguments
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from unite import InputError, MediaError, UniteEncoder
from unite.cli.main import main
from unite.errors import ConfigError

INSTRUCTION = "Represent the given image with the following question:"
SAME = 0.99999


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Every network connection attempted while these tests run is refused and recorded; none may happen.
    Local Unix sockets (the worker processes' fork server) are not the network and go through."""
    attempts: list[object] = []

    def refusing(original):
        def refuse(self, address, *args):
            if self.family == socket.AF_UNIX:
                return original(self, address, *args)
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")

        return refuse

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refusing(socket.socket.connect))
        patch.setattr(socket.socket, "connect_ex", refusing(socket.socket.connect_ex))
        yield
    assert attempts == [], f"sentence-transformers or unite tried the network: {attempts}"


@pytest.fixture(scope="module")
def exported(legacy_checkpoint, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("st") / "unite-st"
    argv = ["export", "sentence-transformers", str(legacy_checkpoint), str(folder), "--prompt", f"vqa={INSTRUCTION}"]
    assert main(argv) == 0
    return folder


@pytest.fixture(scope="module")
def st_model(exported) -> SentenceTransformer:
    return SentenceTransformer(str(exported), trust_remote_code=True, device="cpu")


def _assert_same(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)
    cosine = (actual * expected).sum(axis=1)
    assert cosine.min() >= SAME, cosine


def _inputs(media: Path) -> tuple[list, list]:
    """(what a sentence-transformers user passes, the same items as UniteEncoder takes them)."""
    pil, array = Image.open(media / "b.jpg"), np.asarray(Image.open(media / "a.png").convert("RGB"))
    frames = [str(media / f"frame{i}.png") for i in range(3)]
    fused = [
        {"text": "What is the name of this place?", "image": str(media / "a.png")},
        {"text": "a clip of moving texture", "video": str(media / "clip.mp4")},
        {
            "text": "<|IMAGE|> on the left, <|IMAGE|> on the right",
            "image": [str(media / "a.png"), str(media / "b.jpg")],
        },
        {"video": frames},
    ]
    st_inputs = ["a red circle", str(media / "a.png"), media / "grey.png", pil, array, str(media / "clip.mp4"), *fused]
    unite_items = [
        "a red circle",
        {"image": str(media / "a.png")},
        {"image": str(media / "grey.png")},
        {"image": pil},
        {"image": array},
        {"video": str(media / "clip.mp4")},
        *fused,
    ]
    return st_inputs, unite_items


def test_export_writes_a_folder_both_libraries_load(exported, legacy_checkpoint, encoder, media_dir, tmp_path):
    modules = json.loads((exported / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "unite_sentence_transformers.UniteModule"}]
    assert (exported / "unite_sentence_transformers.py").is_file()
    config = json.loads((exported / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "", "document": "", "vqa": INSTRUCTION}
    assert config["similarity_fn_name"] == "cosine" and config["default_prompt_name"] is None
    settings = json.loads((exported / "unite_config.json").read_text())
    assert settings["position_scheme"] == "sequential"

    _, items = _inputs(media_dir)
    _assert_same(UniteEncoder.from_pretrained(exported, device="cpu").encode(items), encoder.encode(items))
    (tmp_path / "items.jsonl").write_text(json.dumps({"text": "a red circle"}) + "\n")
    out = tmp_path / "out.npy"
    assert main(["encode", str(tmp_path / "items.jsonl"), "--model", str(exported), "--output", str(out)]) == 0
    _assert_same(np.load(out), encoder.encode(["a red circle"]))


def test_export_refuses_a_folder_in_use(exported, legacy_checkpoint, capsys):
    assert main(["export", "sentence-transformers", str(legacy_checkpoint), str(exported)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("unite: error: ") and "not an empty folder" in error and error.count("\n") == 1


def test_encode_equals_unite_encoder_for_every_input_kind(st_model, encoder, media_dir):
    assert st_model.get_embedding_dimension() == encoder.embedding_dim
    st_inputs, items = _inputs(media_dir)
    expected = encoder.encode(items)
    _assert_same(st_model.encode(st_inputs, batch_size=4), expected)  # mixed modalities in one call and batch
    single = st_model.encode({"text": "a clip of moving texture", "video": str(media_dir / "clip.mp4")})
    assert single.shape == (encoder.embedding_dim,)
    _assert_same(single[None], expected[7:8])


def test_a_prompt_is_the_instruction_before_the_text(st_model, encoder, media_dir):
    image = str(media_dir / "a.png")
    fused = {"text": "What is the name of this place?", "image": str(media_dir / "b.jpg")}
    st_inputs, items = ["a red circle", image, fused], ["a red circle", {"image": image}, fused]
    with_instruction = encoder.encode(items, instruction=INSTRUCTION)
    _assert_same(st_model.encode_query(st_inputs, prompt_name="vqa"), with_instruction)
    _assert_same(st_model.encode(st_inputs, prompt=INSTRUCTION + " "), with_instruction)
    _assert_same(st_model.encode_document(st_inputs), encoder.encode(items))  # the empty document prompt
    dicts = [{"text": "a red circle", "instruction": INSTRUCTION}]
    _assert_same(st_model.encode_query(dicts), with_instruction[:1])
    with pytest.raises(InputError, match="conflicts with the prompt"):
        st_model.encode(dicts, prompt="Another instruction:")

    features = st_model.preprocess(["a red circle"], prompt="Represent the sentence: ")
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Represent the sentence: a red circle\nSummary above sentence in one word:<|im_end|>\n"
        "<|im_start|>assistant\n<|endoftext|>"
    )
    assert features["input_ids"][0].tolist() == st_model.tokenizer(expected)["input_ids"]


def test_model_kwargs_set_dtype_and_encoding_settings(exported):
    model = SentenceTransformer(
        str(exported), trust_remote_code=True, device="cpu", model_kwargs={"dtype": "bfloat16", "video_frames": 4}
    )
    assert model[0].model.dtype == torch.bfloat16 and model[0].settings.video_frames == 4
    assert model.encode(["a red circle"]).dtype == np.float32
    with pytest.raises(ConfigError, match="unknown encoding setting"):
        SentenceTransformer(str(exported), trust_remote_code=True, device="cpu", model_kwargs={"video_fram": 4})


def test_bad_inputs_raise_typed_one_line_errors(st_model, media_dir):
    with pytest.raises(MediaError, match="missing.png"):
        st_model.encode([{"image": str(media_dir / "missing.png")}])
    with pytest.raises(InputError, match="chat messages"):
        st_model.encode([{"role": "user", "content": "hello"}])
    with pytest.raises(ConfigError, match="processing_kwargs"):
        st_model.encode(["a"], processing_kwargs={"video": {"fps": 2}})


def test_the_exported_module_without_unite_says_how_to_install(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "unite.integrations.sentence_transformers", None)  # as if not installed
    spec = importlib.util.spec_from_file_location("unite_st_shim", exported / "unite_sentence_transformers.py")
    with pytest.raises(ImportError, match=r"pip install -U 'unite-embed\[st\]'"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _text_pairs(media: Path) -> Dataset:
    return Dataset.from_dict(
        {
            "anchor": ["a red circle", "a blue square", "green grass", "a yellow sun"],
            "positive": ["red", "blue", "grass", "sun"],
        }
    )


def _image_pairs(media: Path) -> Dataset:
    images = [Image.open(media / name).convert("RGB") for name in ("a.png", "b.jpg")]  # two sizes: two grids
    return Dataset.from_dict({"anchor": ["one", "two"], "positive": images})


@pytest.mark.parametrize(
    ("make_loss", "make_data"),
    [
        (MultipleNegativesRankingLoss, _text_pairs),
        (lambda model: CachedMultipleNegativesRankingLoss(model, mini_batch_size=1), _image_pairs),
    ],
    ids=["mnrl-text-pairs", "cached-mnrl-image-text-pairs"],
)
def test_one_training_step_changes_the_weights_and_saves(exported, media_dir, tmp_path, make_loss, make_data):
    model = SentenceTransformer(str(exported), trust_remote_code=True, device="cpu")
    weight = model[0].model.model.language_model.layers[0].mlp.up_proj.weight
    before = weight.detach().clone()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=make_data(media_dir), loss=make_loss(model)
    ).train()
    assert torch.isfinite(weight).all() and not torch.equal(weight.detach(), before)

    fused = {"text": "What is the name of this place?", "image": str(media_dir / "b.jpg")}
    st_inputs, items = ["a red circle", fused], ["a red circle", fused]
    trained = model.encode(st_inputs)
    model.save(str(tmp_path / "saved"))
    saved = tmp_path / "saved"
    assert json.loads((saved / "modules.json").read_text())[0]["type"] == "unite_sentence_transformers.UniteModule"
    _assert_same(SentenceTransformer(str(saved), trust_remote_code=True, device="cpu").encode(st_inputs), trained)
    _assert_same(UniteEncoder.from_pretrained(saved, device="cpu").encode(items), trained)


def test_cached_loss_splits_media_per_sample(st_model, media_dir):
    """GradCache embeds mini-batches of one pair; its loss equals the uncached loss only if each mini-batch gets
    its own images' patches. Here the first positive holds two images and the second none, so one grid row per
    sample (sentence-transformers' fallback without num_images_per_sample) would be wrong."""
    two_images = {"text": "<|IMAGE|> and <|IMAGE|>", "image": [str(media_dir / "a.png"), str(media_dir / "b.jpg")]}

    def features():
        return [st_model.preprocess(["one", "two"]), st_model.preprocess([two_images, "a sentence alone"])]

    labels = torch.zeros(2)
    with torch.no_grad():
        plain = MultipleNegativesRankingLoss(st_model)(features(), labels)
    cached = CachedMultipleNegativesRankingLoss(st_model, mini_batch_size=1)(features(), labels)
    torch.testing.assert_close(cached.detach(), plain, rtol=1e-5, atol=1e-5)
    assert features()[1]["num_images_per_sample"].tolist() == [2, 0]
