"""Loading, batching invariances, position schemes, saving and error policy of UniteEncoder."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from unite import CheckpointError, ConfigError, InputError, MediaError, UniteEncoder
from unite.models.modeling import last_token_pool, sequential_positions
from unite.testing import make_image


def _mixed_items(media):
    return [
        "a short text",
        {"image": str(media / "a.png")},
        {"text": "a much longer text that is here to make the padding differ between rows " * 3},
        {
            "text": "<|IMAGE|> on the left, <|IMAGE|> on the right",
            "image": [str(media / "a.png"), str(media / "b.jpg")],
        },
        {"video": str(media / "clip.mp4")},
        {"text": "greyscale", "image": str(media / "grey.png")},
        {"image": str(media / "rgba.png")},
        {"video": [str(media / f"frame{i}.png") for i in range(3)]},
    ]


def test_both_layouts_load_to_identical_embeddings(legacy_checkpoint, current_checkpoint, media_dir):
    items = _mixed_items(media_dir)
    legacy = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu").encode(items)
    current = UniteEncoder.from_pretrained(current_checkpoint, device="cpu").encode(items)
    np.testing.assert_array_equal(legacy, current)
    np.testing.assert_allclose(np.linalg.norm(legacy, axis=1), 1.0, atol=1e-5)
    assert legacy.dtype == np.float32


def _copy_with(checkpoint, tmp_path, change):
    folder = tmp_path / "edited"
    shutil.copytree(checkpoint, folder)
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_missing_tensor_is_refused_by_name(legacy_checkpoint, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    folder = _copy_with(legacy_checkpoint, tmp_path, lambda state: state.pop(name))
    with pytest.raises(CheckpointError, match="1 missing: model.language_model.layers.1.mlp.up_proj.weight"):
        UniteEncoder.from_pretrained(folder, device="cpu")


def test_unexpected_tensor_is_refused_by_name(legacy_checkpoint, tmp_path):
    folder = _copy_with(legacy_checkpoint, tmp_path, lambda state: state.update({"visual.extra.weight": torch.ones(2)}))
    with pytest.raises(CheckpointError, match="1 unexpected: visual.extra.weight"):
        UniteEncoder.from_pretrained(folder, device="cpu")


def test_wrong_shape_is_refused(legacy_checkpoint, tmp_path):
    folder = _copy_with(legacy_checkpoint, tmp_path, lambda state: state.update({"model.norm.weight": torch.ones(3)}))
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        UniteEncoder.from_pretrained(folder, device="cpu")


def test_untied_lm_head_and_tied_lm_head_in_file_both_load(tmp_path):
    from unite.testing import make_tiny_checkpoint

    untied = make_tiny_checkpoint(tmp_path / "untied", tie_word_embeddings=False)
    assert "lm_head.weight" in load_file(str(untied / "model.safetensors"))
    UniteEncoder.from_pretrained(untied, device="cpu")
    with pytest.raises(CheckpointError, match="missing: lm_head.weight"):
        UniteEncoder.from_pretrained(
            _copy_with(untied, tmp_path, lambda state: state.pop("lm_head.weight")), device="cpu"
        )


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        UniteEncoder.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        UniteEncoder.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_hub_id_offline_gives_checkpoint_error():
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):
        UniteEncoder.from_pretrained("friedrichor/Unite-Base-Qwen2-VL-2B", device="cpu", local_files_only=True)


def test_invariant_to_batch_size_order_and_padding_side(encoder, media_dir):
    items = _mixed_items(media_dir)
    reference = np.stack([encoder.encode([item])[0] for item in items])
    for batch_size in (2, 3, 8):
        np.testing.assert_allclose(encoder.encode(items, batch_size=batch_size), reference, atol=2e-5)
    order = np.random.default_rng(0).permutation(len(items))
    np.testing.assert_allclose(encoder.encode([items[i] for i in order], batch_size=4), reference[order], atol=2e-5)
    from unite.types import to_item

    features = [encoder.processor.prepare(to_item(item)) for item in items]
    with torch.inference_mode():
        rows = {}
        for side in ("left", "right"):
            batch = encoder.processor.collate(features, padding_side=side)
            rows[side] = encoder.model(**batch).numpy()
    np.testing.assert_allclose(rows["left"], reference, atol=2e-5)
    np.testing.assert_allclose(rows["right"], reference, atol=2e-5)


def test_token_budget_splits_batches(encoder, media_dir, monkeypatch):
    sizes = []
    original = encoder._embed
    monkeypatch.setattr(encoder, "_embed", lambda features: sizes.append(len(features)) or original(features))
    items = _mixed_items(media_dir)
    encoder.encode(items, batch_size=8, max_tokens_per_batch=10**9)
    assert sizes == [8]
    sizes.clear()
    encoder.encode(items, batch_size=8, max_tokens_per_batch=1)
    assert sizes == [1] * len(items)


def test_default_token_budget_is_smaller_on_the_cpu(encoder, monkeypatch):
    from unite.models.encoder import CPU_MAX_TOKENS_PER_BATCH, DEFAULT_MAX_TOKENS_PER_BATCH

    assert encoder.device.type == "cpu"
    assert encoder.token_budget() == CPU_MAX_TOKENS_PER_BATCH < DEFAULT_MAX_TOKENS_PER_BATCH
    assert encoder.token_budget(DEFAULT_MAX_TOKENS_PER_BATCH) == DEFAULT_MAX_TOKENS_PER_BATCH  # asked for: kept
    monkeypatch.setattr(UniteEncoder, "device", property(lambda self: torch.device("mps")))
    assert encoder.token_budget() == DEFAULT_MAX_TOKENS_PER_BATCH


def test_prefetch_keeps_batches_and_items_in_flight():
    from concurrent.futures import Future

    from unite.models.encoder import _prefetch

    submitted = []

    def submit(item):
        submitted.append(item)
        return Future()

    batches = [[i] for i in range(8)]
    items = {i: f"item {i}" for i in range(8)}
    flow = _prefetch(submit, batches, items, lookahead=2, min_items=4)
    batch, futures, ahead = next(flow)
    assert batch == [0] and len(futures) == 1
    assert len(ahead) == 4 and len(submitted) == 5  # four single-item batches ahead, more than the two batches
    batch, _, ahead = next(flow)
    assert batch == [1] and len(ahead) == 4 and len(submitted) == 6
    big = [[0, 1, 2], [3, 4, 5], [6, 7], [8]]
    flow = _prefetch(submit, big, {i: i for i in range(9)}, lookahead=2, min_items=4)
    batch, _, ahead = next(flow)
    assert batch == [0, 1, 2] and len(ahead) == 5  # two batches ahead already hold four items or more
    assert [b for b, _, _ in flow] == [[3, 4, 5], [6, 7], [8]]
    flow = _prefetch(submit, [[0], [1], [2]], items, lookahead=2, min_items=4)
    next(flow)
    pending = list(flow.gi_frame.f_locals["queue"])
    flow.close()  # stopped early: what was submitted and not yielded is cancelled
    assert all(future.cancelled() for _, futures in pending for future in futures)


def test_model_threads_make_room_for_items_in_preparation_and_come_back(encoder, monkeypatch):
    """On the CPU, while later items are still being prepared the model runs with one intra-op thread less per
    item in preparation (at most the workers); the last batch, with nothing left to prepare, gets them all; the
    count found on entry is restored, also when the call fails."""
    import threading

    texts = ["a text long enough to come first, " * 4, "a middle text of some length", "short", "tiny"]
    released = threading.Event()
    prepare = encoder.processor.prepare

    def slow_prepare(item):
        if item.plain_text != texts[0]:
            assert released.wait(60)
        return prepare(item)

    seen = []
    original = encoder._embed

    def embed(features):
        seen.append(torch.get_num_threads())
        released.set()
        return original(features)

    monkeypatch.setattr(encoder.processor, "prepare", slow_prepare)
    monkeypatch.setattr(encoder, "_embed", embed)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        encoder.encode(texts, batch_size=1, num_workers=2, prepare_in="threads")
        assert seen[0] == 2  # three items waiting, two of them in the two workers
        assert seen[-1] == 4
        assert torch.get_num_threads() == 4

        released.clear()
        seen.clear()

        def failing(features):
            seen.append(torch.get_num_threads())
            released.set()
            raise RuntimeError("the model broke")

        monkeypatch.setattr(encoder, "_embed", failing)
        with pytest.raises(InputError, match="the model broke"):
            encoder.encode(texts, batch_size=1, num_workers=1, prepare_in="threads")
        assert seen == [3]
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_sequential_and_mrope_agree_on_text_and_differ_on_images(legacy_checkpoint, media_dir):
    sequential = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu")
    mrope = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", position_scheme="mrope")
    texts = ["one text", "another, longer piece of text"]
    np.testing.assert_allclose(sequential.encode(texts), mrope.encode(texts), atol=1e-5)
    images = [{"image": str(media_dir / "a.png")}, {"video": str(media_dir / "clip.mp4")}]
    similarity = np.sum(sequential.encode(images) * mrope.encode(images), axis=1)
    assert np.all(similarity < 0.9999)


def test_positions_and_pooling_follow_the_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert sequential_positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]
    hidden = torch.arange(10.0).view(2, 5, 1)
    assert last_token_pool(hidden, mask).flatten().tolist() == [4.0, 8.0]


def test_save_pretrained_round_trip(encoder, media_dir, tmp_path):
    items = _mixed_items(media_dir)
    changed = UniteEncoder(encoder.model, encoder.tokenizer, encoder.settings.replace(video_frames=4))
    folder = changed.save_pretrained(tmp_path / "saved")
    recorded = json.loads((folder / "unite_config.json").read_text())
    assert recorded["video_frames"] == 4
    assert recorded["position_scheme"] == "sequential"
    assert recorded["image_min_pixels"] == 256 * 28 * 28
    assert "Summary above {modalities} in one word:" in recorded["prompt_template"]
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["UniteQwen2VL"]
    loaded = UniteEncoder.from_pretrained(folder, device="cpu")
    assert loaded.settings == changed.settings
    np.testing.assert_array_equal(loaded.encode(items), changed.encode(items))


def test_device_and_dtype_defaults(encoder):
    assert encoder.device.type == "cpu"
    assert encoder.dtype == torch.float32
    with pytest.raises(ConfigError, match="dtype"):
        UniteEncoder.from_pretrained("unused", dtype="int8")


def test_bfloat16_on_cpu_is_close(legacy_checkpoint):
    half = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", dtype="bfloat16")
    full = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu")
    texts = ["a red circle", "a blue square"]
    assert half.dtype == torch.bfloat16
    assert np.all(np.sum(half.encode(texts) * full.encode(texts), axis=1) > 0.98)


def test_flash_attention_without_package_is_a_config_error(legacy_checkpoint, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import fails as when the package is missing
    with pytest.raises(ConfigError, match="flash-attn"):
        UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", attn_implementation="flash_attention_2")


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        ({"image": "missing.png"}, MediaError, "file not found"),
        ({"image": "https://example.com/a.png"}, MediaError, "remote URLs are refused"),
        ({"video": "missing.mp4"}, MediaError, "file not found"),
        ({"text": "<|IMAGE|>", "image": []}, InputError, "placeholder"),
        ({"colour": "red"}, InputError, "unknown key"),
        ("", InputError, "empty item"),
        (3.5, InputError, "cannot embed a float"),
    ],
)
def test_bad_items_raise_typed_errors_naming_the_item(encoder, item, error, message):
    with pytest.raises(error, match=f"item 1: .*{message}"):
        encoder.encode(["fine", item])


def test_aspect_ratio_and_bomb_are_refused(encoder, tmp_path):
    make_image(10, 2100).save(tmp_path / "strip.png")
    with pytest.raises(MediaError, match="aspect ratio"):
        encoder.encode([{"image": str(tmp_path / "strip.png")}])
    small = UniteEncoder(encoder.model, encoder.tokenizer, encoder.settings.replace(max_decoded_pixels=1000))
    make_image(40, 40).save(tmp_path / "big.png")
    with pytest.raises(MediaError, match="decompression bomb"):
        small.encode([{"image": str(tmp_path / "big.png")}])


def test_too_long_is_refused_or_cut_left_outside_vision(encoder, media_dir):
    long_text = "word " * 200
    strict = UniteEncoder(encoder.model, encoder.tokenizer, encoder.settings.replace(max_length=100))
    with pytest.raises(InputError, match="above max_length=100"):
        strict.encode([long_text])
    cutting = UniteEncoder(
        encoder.model, encoder.tokenizer, encoder.settings.replace(max_length=100, truncation="left")
    )
    features = cutting.processor.prepare(__import__("unite").Item(text=long_text))
    assert len(features.input_ids) == 100
    full = encoder.processor.prepare(__import__("unite").Item(text=long_text))
    assert features.input_ids == full.input_ids[-100:]
    with pytest.raises(InputError, match="vision block"):
        cutting.encode([{"text": long_text, "image": str(media_dir / "a.png")}])


def test_skip_policy_keeps_rows_aligned(encoder):
    result = encoder.encode_with_errors(["first", {"image": "missing.png"}, "third"], on_error="skip")
    assert result.ok.tolist() == [True, False, True]
    assert result.errors[0][0] == 1 and "missing.png" in result.errors[0][1]
    assert not result.embeddings[1].any()
    np.testing.assert_allclose(result.embeddings[[0, 2]], encoder.encode(["first", "third"]), atol=1e-6)


def test_instruction_goes_into_the_prompt(encoder):
    plain = encoder.encode_query(["What is shown?"])
    instructed = encoder.encode_query(["What is shown?"], instruction="Represent the question:")
    assert float(np.dot(plain[0], instructed[0])) < 0.9999
    np.testing.assert_allclose(instructed, encoder.encode(["Represent the question: What is shown?"]), atol=1e-6)


def test_torch_output_and_pil_inputs(encoder, media_dir):
    from PIL import Image

    image = Image.open(media_dir / "a.png")
    as_torch = encoder.encode([image, {"image": np.asarray(image.convert("RGB"))}], convert_to="torch")
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), encoder.encode([{"image": str(media_dir / "a.png")}] * 2), atol=1e-6)


def test_tied_lm_head_points_at_the_loaded_embeddings(encoder):
    model = encoder.model
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


# ------------------------------------------------------------------------- one item's failure stays its own


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "abc \ud800"}, "'text' holds a lone surrogate U+D800 at character 5"),
        ({"text": "a", "instruction": "ok \udc00 no"}, "'instruction' holds a lone surrogate U+DC00 at character 4"),
        ({"images": ("im\udfffage.png",)}, "'image' path holds a lone surrogate U+DFFF at character 3"),
        ({"videos": (["f0.png", "\ud83d.png"],)}, "'video' path holds a lone surrogate U+D83D at character 1"),
    ],
)
def test_items_refuse_strings_that_are_not_unicode(fields, message):
    from unite import Item

    with pytest.raises(InputError, match=re.escape(message)):
        Item(**fields)
    raw = {"text": fields.get("text"), "instruction": fields.get("instruction")}
    raw = {key: value for key, value in raw.items() if value is not None}
    for key in ("images", "videos"):
        if key in fields:
            raw[key[:-1]] = fields[key][0]
    with pytest.raises(InputError, match=re.escape(message)):
        Item.from_dict(raw)


def test_items_refuse_a_surrogate_given_to_the_encoder(encoder):
    result = encoder.encode_with_errors(["fine", "abc \ud800", {"text": "x\udfff"}], on_error="skip")
    assert result.ok.tolist() == [True, False, False]
    assert [index for index, _ in result.errors] == [1, 2]
    with pytest.raises(InputError, match="item 1: 'text' holds a lone surrogate U\\+D800"):
        encoder.encode(["fine", "abc \ud800"])


@pytest.mark.parametrize("stage", ["estimate_length", "prepare"])
def test_any_exception_while_preparing_an_item_is_that_items_error(encoder, monkeypatch, stage):
    original = getattr(encoder.processor, stage)

    def fragile(item):
        if item.text == "boom":
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return original(item)

    monkeypatch.setattr(encoder.processor, stage, fragile)
    items = ["first", "boom", "third"]
    result = encoder.encode_with_errors(items, on_error="skip")
    assert result.ok.tolist() == [True, False, True]
    assert result.errors == [
        (
            1,
            "internal error while preparing the item: TypeError: TextEncodeInput must be "
            "Union[TextInputSequence, Tuple[InputSequence, InputSequence]]",
        )
    ]
    with pytest.raises(InputError) as raised:
        encoder.encode(items)
    assert raised.value.item_index == 1
    assert raised.value.reason.startswith("internal error while preparing the item: TypeError: ")
    assert str(raised.value).startswith("item 1: internal error while preparing the item: TypeError:")


def test_a_batch_failing_in_the_model_is_retried_one_by_one(encoder, monkeypatch):
    items = ["one", "two two", "poison", "four four four", "five"]
    expected = encoder.encode(items)
    poisoned: set[int] = set()
    prepare, embed = encoder.processor.prepare, encoder._embed

    def tagging_prepare(item):
        features = prepare(item)
        if item.text == "poison":
            poisoned.add(id(features))
        return features

    calls: list[int] = []

    def fragile_embed(features):
        calls.append(len(features))
        if any(id(feature) in poisoned for feature in features):
            raise RuntimeError("CUDA out of memory (simulated)")
        return embed(features)

    monkeypatch.setattr(encoder.processor, "prepare", tagging_prepare)
    monkeypatch.setattr(encoder, "_embed", fragile_embed)
    result = encoder.encode_with_errors(items, batch_size=8, on_error="skip")
    assert calls == [5, 1, 1, 1, 1, 1]  # the whole batch, then each of its items alone
    assert result.ok.tolist() == [True, True, False, True, True]
    assert len(result.errors) == 1 and result.errors[0][0] == 2
    assert "RuntimeError: CUDA out of memory (simulated)" in result.errors[0][1]
    np.testing.assert_allclose(result.embeddings[result.ok], expected[[0, 1, 3, 4]], atol=1e-5)
    assert not result.embeddings[2].any()
    with pytest.raises(InputError) as raised:
        encoder.encode(items, batch_size=8)
    assert raised.value.item_index == 2 and "out of memory" in raised.value.reason


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/clip.mp4", "https://example.com/a.png"])
def test_urls_are_never_joined_to_the_items_folder(tmp_path, url):
    """A URL in an items file stays a URL (refused or fetched by the media reader), never a path under the file's
    folder, so the error says what it is."""
    from unite.types import Item

    item = Item.from_dict({"image": url}, base_dir=tmp_path)
    assert item.images == (url,)
