"""Packing: a batch run as one sequence without padding gives the embeddings of the padded batch and of each item
alone; attention never crosses an item boundary; the GPU feeding helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unite.models.modeling import (
    UniteQwen2VL,
    _per_item_attention,
    activation_bytes_per_token,
    packed_positions,
    token_budget_from_memory,
)

COSINE = 0.99999


def _load(checkpoint, **kwargs):
    from unite import UniteEncoder

    return UniteEncoder.from_pretrained(checkpoint, device="cpu", dtype="float32", **kwargs)


def _mixed_items(media):
    return [
        "short",
        "a much longer sentence about stormy clouds over the open sea, " * 6,
        {"image": str(media / "a.png")},
        {"image": str(media / "b.jpg")},
        {"text": "a grey picture", "image": str(media / "grey.png")},
        {"video": str(media / "clip.mp4")},
        {"text": "<|IMAGE|> left, <|IMAGE|> right", "image": [str(media / "rgba.png"), str(media / "b.jpg")]},
        {"text": "stormy sea", "video": str(media / "clip.mp4"), "image": str(media / "a.png")},
        "medium length text with a few more words",
    ]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def mixed(media_dir):
    return _mixed_items(media_dir)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def pair(request, legacy_checkpoint):
    """(packed encoder, padded encoder) with the same weights and attention implementation."""
    return _load(legacy_checkpoint, attn_implementation=request.param), _load(
        legacy_checkpoint, attn_implementation=request.param, packing=False
    )


def _features(encoder, items):
    from unite.types import to_item

    return [encoder.processor.prepare(to_item(item)) for item in items]


def test_collate_packed_lays_items_end_to_end(encoder, mixed):
    features = _features(encoder, mixed[:4])
    batch = encoder.processor.collate_packed(features)
    lengths = [len(feature.input_ids) for feature in features]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == [0, *np.cumsum(lengths).tolist()]
    assert batch["input_ids"][0].tolist() == [token for feature in features for token in feature.input_ids]
    padded = encoder.processor.collate(features)
    for key in ("pixel_values", "image_grid_thw"):
        assert torch.equal(batch[key], padded[key])
    assert "attention_mask" not in batch


def test_packed_positions_restart_in_every_item():
    cu_seqlens = torch.tensor([0, 3, 4, 8], dtype=torch.int32)
    assert packed_positions(cu_seqlens).tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]


def test_packed_matches_padded_on_a_mixed_batch(pair, mixed):
    packed, padded = pair
    features = _features(packed, mixed)
    got = packed._embed(features)
    want = padded._embed(features)
    assert got.shape == want.shape == (len(mixed), packed.embedding_dim)
    assert _cosines(got, want).min() >= COSINE
    assert packed.model.config.text_config._attn_implementation.startswith("unite_packed_")
    assert padded.model.config.text_config._attn_implementation in ("sdpa", "eager")  # never packed


def test_batch_invariance_alone_and_in_any_order(pair, mixed):
    packed, padded = pair
    features = _features(packed, mixed)
    alone = np.concatenate([padded._embed([feature]) for feature in features])
    in_batch = packed._embed(features)
    assert _cosines(in_batch, alone).min() >= COSINE
    order = np.random.default_rng(0).permutation(len(features))
    shuffled = packed._embed([features[i] for i in order])
    assert _cosines(shuffled, in_batch[order]).min() >= COSINE
    reversed_ = packed._embed(features[::-1])
    assert _cosines(reversed_, in_batch[::-1]).min() >= COSINE


def test_attention_is_confined_to_each_item(pair, mixed):
    """Changing one item's tokens or pixels leaves every other item's embedding as it was."""
    packed, _ = pair
    features = _features(packed, mixed[:6])
    before = packed._embed(features)
    text = features[1]
    altered_text = type(text)(
        [text.input_ids[0], *[(token + 7) % 300 for token in text.input_ids[1:-1]], text.input_ids[-1]]
    )
    image = features[2]
    noisy = [type(v)(**{**vars(v), "pixel_values": v.pixel_values + 0.5}) for v in image.images]
    altered_image = type(image)(image.input_ids, noisy, image.videos)
    for index, altered in ((1, altered_text), (2, altered_image)):
        changed = [*features[:index], altered, *features[index + 1 :]]
        after = packed._embed(changed)
        others = [i for i in range(len(features)) if i != index]
        assert np.abs(after[others] - before[others]).max() < 1e-6
        assert np.abs(after[index] - before[index]).max() > 1e-3  # the change did reach its own item


def _reference_attention(query, key, value, lengths, scaling):
    """Block-diagonal causal attention written out: softmax(q k^T * scale + mask) v per item, GQA by repetition."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    total = query.shape[2]
    item = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    allowed = (item[:, None] == item[None, :]) & (torch.arange(total)[:, None] >= torch.arange(total)[None, :])
    scores = (query @ key.transpose(-1, -2)) * scaling
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return (weights @ value).transpose(1, 2)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_per_item_attention_is_block_diagonal_causal(kernel):
    from transformers import AttentionInterface
    from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward

    base = AttentionInterface._global_mapping["sdpa"] if kernel == "sdpa" else eager_attention_forward
    attention = _per_item_attention(base, causal_mask=kernel == "eager")
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = 2, True, False
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 1, 9, 3]
    query = torch.randn(1, 4, sum(lengths), 8, generator=generator)
    key, value = (torch.randn(1, 2, sum(lengths), 8, generator=generator) for _ in range(2))
    out, _ = attention(module, query, key, value, None, item_lengths=lengths, scaling=8**-0.5)
    want = _reference_attention(query, key, value, lengths, 8**-0.5)
    assert out.shape == (1, sum(lengths), 4, 8)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_transformers_block_diagonal_mask_agrees(legacy_checkpoint, mixed):
    """transformers 5.24 builds a (1, 1, T, T) block-diagonal mask itself when the text model gets 4-row positions
    (per-item 1-D row first) and no mask; the per-item path must give the same states."""
    plain = _load(legacy_checkpoint, packing=False)
    packed = _load(legacy_checkpoint)
    features = _features(packed, mixed[:3] + mixed[-1:])  # text and one image: the 1-D positions are the rope ones
    batch = packed.processor.collate_packed(features)
    want = packed._embed(features)
    model: UniteQwen2VL = plain.model
    embeds = model._merged_embeddings(batch["input_ids"], batch["image_grid_thw"], None, batch["pixel_values"])
    positions = packed_positions(batch["cu_seqlens"])
    with torch.inference_mode():
        hidden = model.model.language_model(
            inputs_embeds=embeds, position_ids=positions.unsqueeze(0).expand(4, -1, -1), use_cache=False
        ).last_hidden_state
    got = torch.nn.functional.normalize(hidden[0, batch["cu_seqlens"][1:].long() - 1], dim=-1).numpy()
    assert _cosines(got, want).min() >= COSINE


def test_mrope_scheme_packed(legacy_checkpoint, mixed):
    packed = _load(legacy_checkpoint, position_scheme="mrope")
    padded = _load(legacy_checkpoint, position_scheme="mrope", packing=False)
    sequential = _load(legacy_checkpoint)
    features = _features(packed, mixed)
    got = packed._embed(features)
    assert _cosines(got, padded._embed(features)).min() >= COSINE
    alone = np.concatenate([padded._embed([feature]) for feature in features])
    assert _cosines(got, alone).min() >= COSINE
    differs = _cosines(got, sequential._embed(features))
    assert differs[0] >= COSINE  # text alone: M-RoPE is 1-D
    assert differs[2] < 0.9999  # an image: M-RoPE really applied


def test_flash_varlen_keywords_reach_every_layer(legacy_checkpoint, mixed, monkeypatch):
    """With flash_attention_2 the text layers get ``cu_seq_lens_q/k`` and ``max_length_q/k`` and no mask, and the
    vision tower none of them. flash-attn is not installed here: a varlen stand-in plays the kernel."""
    from transformers import AttentionInterface

    calls = []

    def fake_flash(module, query, key, value, attention_mask, cu_seq_lens_q=None, **kwargs):
        calls.append((attention_mask, cu_seq_lens_q, kwargs.get("max_length_q")))
        assert cu_seq_lens_q.dtype == torch.int32 and torch.equal(cu_seq_lens_q, kwargs["cu_seq_lens_k"])
        lengths = cu_seq_lens_q.diff().tolist()
        return _reference_attention(query, key, value, lengths, module.scaling), None

    monkeypatch.setitem(AttentionInterface._global_mapping, "flash_attention_2", fake_flash)
    packed = _load(legacy_checkpoint)
    padded = _load(legacy_checkpoint, packing=False)
    packed.model.config.text_config._attn_implementation = "flash_attention_2"
    features = _features(packed, mixed[:5])
    got = packed._embed(features)
    assert _cosines(got, padded._embed(features)).min() >= COSINE
    lengths = [len(feature.input_ids) for feature in features]
    assert len(calls) == packed.model.config.text_config.num_hidden_layers
    assert all(mask is None and cu[-1] == sum(lengths) and longest == max(lengths) for mask, cu, longest in calls)


def test_encode_packs_by_default_and_switches_off(legacy_checkpoint, mixed, monkeypatch, caplog):
    packed = _load(legacy_checkpoint)
    padded = _load(legacy_checkpoint, packing=False)
    assert packed.packing and not padded.packing
    seen = []
    collate = type(packed.processor).collate_packed

    def spy(self, features):
        seen.append(len(features))
        return collate(self, features)

    monkeypatch.setattr(type(packed.processor), "collate_packed", spy)
    with caplog.at_level("WARNING"):
        got = packed.encode(mixed, batch_size=16)
        want = padded.encode(mixed, batch_size=16)
    assert seen == [len(mixed)]  # one packed batch, never retried item by item
    assert not caplog.records
    assert _cosines(got, want).min() >= COSINE


def test_to_device_casts_pixels_only(encoder, mixed):
    from unite.models.encoder import _to_device

    batch = encoder.processor.collate_packed(_features(encoder, mixed[2:4]))
    moved = _to_device(batch, torch.device("cpu"), torch.bfloat16)
    assert moved["pixel_values"].dtype == torch.bfloat16
    assert moved["input_ids"].dtype == torch.long and moved["cu_seqlens"].dtype == torch.int32
    assert moved["image_grid_thw"].dtype == torch.long


@pytest.mark.gpu
def test_to_device_pins_and_copies_without_blocking(encoder, mixed):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from unite.models.encoder import _to_device

    batch = encoder.processor.collate_packed(_features(encoder, mixed[2:4]))
    moved = _to_device(batch, torch.device("cuda"), torch.bfloat16)
    torch.cuda.synchronize()
    assert moved["pixel_values"].is_cuda and moved["pixel_values"].dtype == torch.bfloat16
    assert torch.equal(moved["input_ids"].cpu(), batch["input_ids"])


def test_activation_bytes_per_token_from_the_config():
    from unite.testing import QWEN2_VL_2B

    text = type("Text", (), {"hidden_size": 1536, "intermediate_size": 8960})()
    assert QWEN2_VL_2B["text"]["hidden_size"] == 1536 and QWEN2_VL_2B["text"]["intermediate_size"] == 8960
    # (6 * hidden + 3 * intermediate) values of 2 bytes, times the safety factor 2
    assert activation_bytes_per_token(text, torch.bfloat16) == (6 * 1536 + 3 * 8960) * 2 * 2
    assert activation_bytes_per_token(text, torch.float32) == (6 * 1536 + 3 * 8960) * 4 * 2


def test_token_budget_from_free_memory():
    gib = 1 << 30

    def free(gibibytes):
        return lambda device: (int(gibibytes * gib), 141 * gib)

    # 0.8 of 10 GiB free at 1 MiB per token
    assert token_budget_from_memory(1 << 20, "cuda:0", mem_get_info=free(10)) == 8192
    assert token_budget_from_memory(1 << 20, "cuda", fraction=0.5, mem_get_info=free(10)) == 5120
    assert token_budget_from_memory(1 << 20, "cuda", mem_get_info=free(0.001)) == 1024  # the floor
    assert token_budget_from_memory(1, "cuda", mem_get_info=free(100)) == 262144  # the ceiling
    assert token_budget_from_memory(1 << 20, "cpu", mem_get_info=free(10)) is None
    assert token_budget_from_memory(1 << 20, None, mem_get_info=free(10)) is None
    with pytest.raises(ValueError):
        token_budget_from_memory(0, "cuda", mem_get_info=free(10))
    with pytest.raises(ValueError):
        token_budget_from_memory(1, "cuda", fraction=1.5, mem_get_info=free(10))


def test_packed_batches_count_the_items_tokens_and_padded_ones_the_longest_times_the_count():
    from unite.models.encoder import _token_batches

    lengths = {0: 10, 1: 9, 2: 8, 3: 3, 4: 3}
    order = [0, 1, 2, 3, 4]  # longest first, as encode sorts them
    # packed: 10 + 9 = 19 <= 20, + 8 = 27 > 20; 8 + 3 + 3 = 14
    assert list(_token_batches(order, lengths, 32, 20, packed=True)) == [[0, 1], [2, 3, 4]]
    # padded: 2 x 10 = 20 <= 20, 3 x 10 = 30 > 20; 2 x 8 = 16, 3 x 8 = 24 > 20; 2 x 3 = 6
    assert list(_token_batches(order, lengths, 32, 20, packed=False)) == [[0, 1], [2, 3], [4]]
    assert list(_token_batches(order, lengths, 2, 1000, packed=True)) == [[0, 1], [2, 3], [4]]  # batch_size
    assert list(_token_batches(order, lengths, 32, 5, packed=True)) == [[0], [1], [2], [3], [4]]  # one alone


def test_the_patch_embedding_is_the_convolution_as_a_matrix_product(encoder):
    """docs/reference.md: patches are (C=3, T=2, 14, 14) flattened channel first; the stock Conv3d with kernel =
    stride over them is one linear map of each row."""
    patch_embed = encoder.model.model.visual.patch_embed
    assert type(patch_embed).__name__ == "LinearPatchEmbed"
    rows = torch.randn(37, 3 * 2 * 14 * 14)
    conv = patch_embed.proj(rows.view(-1, 3, 2, 14, 14)).view(37, -1)  # the stock module's computation
    torch.testing.assert_close(patch_embed(rows), conv, rtol=1e-5, atol=1e-5)
    assert set(encoder.model.state_dict()) >= {"model.visual.patch_embed.proj.weight"}
