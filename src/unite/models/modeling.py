"""The UNITE network: Qwen2-VL whose forward returns L2-normalised last-token embeddings.

Two layouts of a batch reach :meth:`UniteQwen2VL.forward`:

- padded: ``input_ids`` and ``attention_mask`` of shape (B, L), each row one item (training, and encoding with
  packing off);
- packed: ``input_ids`` of shape (1, T), the items laid end to end, with ``cu_seqlens`` (B + 1,) marking where
  each begins. No padding token reaches the language model; positions restart at 0 in every item, attention
  stays inside each item (causal there) and each item is pooled at its own last token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface, Qwen2VLForConditionalGeneration
from transformers.masking_utils import eager_mask, sdpa_mask
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchEmbed, eager_attention_forward

from unite.settings import PositionScheme

__all__ = [
    "UniteQwen2VL",
    "activation_bytes_per_token",
    "last_token_pool",
    "packed_positions",
    "sequential_positions",
    "token_budget_from_memory",
]


def sequential_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Plain 1-D positions 0..n-1 over the real tokens of each row, whatever the padding side.

    Args:
        attention_mask: (B, L), 1 for real tokens.

    Returns:
        (B, L) long positions; padding gets 0. RoPE depends only on position differences, so this equals the
        released models' 0..L-1 numbering up to float noise, and is the same for every padding.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def packed_positions(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """1-D positions of a packed sequence, restarting at 0 in every item.

    Args:
        cu_seqlens: (B + 1,) item boundaries, ``cu_seqlens[i]`` the first token of item i, the last entry T.

    Returns:
        (1, T) long positions: 0..n_i-1 for each item in turn.
    """
    starts = cu_seqlens[:-1].long()
    lengths = cu_seqlens.diff().long()
    total = int(cu_seqlens[-1])
    offsets = torch.repeat_interleave(starts, lengths, output_size=total)
    return (torch.arange(total, device=cu_seqlens.device) - offsets).view(1, -1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each row's last real token, found from the mask (never from the pad id).

    Args:
        hidden: (B, L, D) final hidden states.
        attention_mask: (B, L).

    Returns:
        (B, D).
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class UniteQwen2VL(Qwen2VLForConditionalGeneration):
    """Qwen2-VL as an embedder; ``forward`` returns (B, D) L2-normalised float32 embeddings.

    ``position_scheme`` picks the decoder positions (:class:`unite.settings.PositionScheme`); the released
    checkpoints need ``sequential``.
    """

    position_scheme: PositionScheme = PositionScheme.SEQUENTIAL

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        patch_embed = self.model.visual.patch_embed
        if type(patch_embed) is PatchEmbed:
            patch_embed.__class__ = LinearPatchEmbed

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        normalize: bool = True,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed a padded batch, or a packed one when ``cu_seqlens`` is given.

        Args:
            input_ids: (B, L) token ids with expanded vision pad runs; packed: (1, T), the items end to end.
            attention_mask: (B, L); unused (and may be omitted) when packed.
            pixel_values: (image patches, 1176) of all images in order, with ``image_grid_thw`` (images, 3).
            pixel_values_videos: (video patches, 1176), with ``video_grid_thw`` (videos, 3).
            normalize: L2-normalise the embeddings.
            cu_seqlens: (B + 1,) int32 boundaries of the packed items (``0, n_0, n_0 + n_1, ..., T``).

        Returns:
            (B, D) float32 embeddings.
        """
        visual = {
            "pixel_values": pixel_values,
            "image_grid_thw": image_grid_thw,
            "pixel_values_videos": pixel_values_videos,
            "video_grid_thw": video_grid_thw,
        }
        if cu_seqlens is not None:
            embeddings = self._packed_forward(input_ids, cu_seqlens, **visual)
        else:
            if attention_mask is None:
                raise ValueError("a padded batch needs its attention_mask (or pass cu_seqlens for a packed one)")
            embeddings = self._padded_forward(input_ids, attention_mask, **visual)
        if self.training and pixel_values is None and pixel_values_videos is None:
            embeddings = embeddings + 0.0 * self._idle_vision()
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    def _padded_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        **pixels: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, D) float32 last-token states of a padded batch."""
        position_ids = self.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            use_cache=False,
            **pixels,
        )
        return last_token_pool(outputs.last_hidden_state, attention_mask).float()

    def _packed_forward(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        **pixels: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, D) float32 states of each packed item's last token.

        The language model gets no 2-D mask: transformers would otherwise build a (1, 1, T, T) block-diagonal mask
        from the positions and make SDPA score every token against every other item's tokens. Instead the
        attention itself is told the item boundaries: flash-attention-2 runs its varlen kernel on
        ``cu_seq_lens_q/k``; SDPA and eager run through :func:`_per_item_attention`, one causal call per item.
        """
        if input_ids.shape[0] != 1 or int(cu_seqlens[-1]) != input_ids.shape[1]:
            raise ValueError(f"packed input_ids must be (1, T) with T = cu_seqlens[-1], got {tuple(input_ids.shape)}")
        if not self.supports_packing:
            raise ValueError("packing needs full attention in every layer; this config has sliding-window layers")
        lengths = cu_seqlens.diff().tolist()
        text_positions = packed_positions(cu_seqlens)
        rope_positions = self._packed_rope_positions(input_ids, lengths, text_positions, image_grid_thw, video_grid_thw)
        inputs_embeds = self._merged_embeddings(input_ids, image_grid_thw, video_grid_thw, **pixels)
        language_model = self.model.language_model
        outputs = language_model(
            inputs_embeds=inputs_embeds,
            # row 0: the per-item 1-D positions transformers reads for packed attention; rows 1-3: the rotary ones
            position_ids=torch.cat([text_positions.unsqueeze(0), rope_positions]),
            attention_mask={layer_type: None for layer_type in language_model.config.layer_types},
            use_cache=False,
            **self._packed_attention_kwargs(cu_seqlens, lengths),
        )
        return outputs.last_hidden_state[0, cu_seqlens[1:].long() - 1].float()

    @property
    def supports_packing(self) -> bool:
        """Whether the language model can take packed items: every layer must use full attention."""
        return all(kind == "full_attention" for kind in self.config.text_config.layer_types)

    def _packed_attention_kwargs(self, cu_seqlens: torch.Tensor, lengths: list[int]) -> dict[str, Any]:
        """Per-forward keywords that carry the item boundaries to the attention of every layer."""
        text_config = self.config.text_config
        implementation = text_config._attn_implementation
        if implementation == "flash_attention_2":
            cu = cu_seqlens.to(torch.int32)
            longest = max(lengths)
            return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
        if implementation in _PACKED_ATTENTION.values():
            return {"item_lengths": lengths}
        if implementation not in _PACKED_ATTENTION:
            supported = ", ".join([*_PACKED_ATTENTION, "flash_attention_2"])
            raise ValueError(f"packing supports the attention implementations {supported}, not {implementation}")
        # sdpa / eager: switch the text layers, once, to the same kernel wrapped to split at item boundaries
        # (padded batches, which carry no item_lengths, go to the plain kernel unchanged)
        text_config._attn_implementation = _PACKED_ATTENTION[implementation]
        return {"item_lengths": lengths}

    def _merged_embeddings(
        self,
        input_ids: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(1, T, D) token embeddings with each image / video pad run replaced by its visual tokens, in order.

        The vision tower runs once over all images (and once over all videos) of the batch, as in the padded path.
        """
        embeds = self.model.get_input_embeddings()(input_ids)
        for pixels, grid, token_id, features_of in (
            (pixel_values, image_grid_thw, self.config.image_token_id, self.model.get_image_features),
            (pixel_values_videos, video_grid_thw, self.config.video_token_id, self.model.get_video_features),
        ):
            if pixels is None:
                continue
            features = features_of(pixels, grid)
            features = getattr(features, "pooler_output", features)
            if isinstance(features, (list, tuple)):
                features = torch.cat(features)
            slots = input_ids == token_id
            if int(slots.sum()) != features.shape[0]:
                raise ValueError(f"{int(slots.sum())} pad tokens for {features.shape[0]} visual tokens")
            embeds = embeds.masked_scatter(slots.unsqueeze(-1).expand_as(embeds), features.to(embeds.dtype))
        return embeds

    def _packed_rope_positions(
        self,
        input_ids: torch.Tensor,
        lengths: list[int],
        text_positions: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """(3, 1, T) rotary positions: the 1-D ones three times, or M-RoPE computed item by item."""
        scheme = PositionScheme(self.position_scheme)
        if scheme is PositionScheme.SEQUENTIAL or (image_grid_thw is None and video_grid_thw is None):
            return text_positions.unsqueeze(0).expand(3, -1, -1)
        pieces = []
        grids = {"image": _rows(image_grid_thw), "video": _rows(video_grid_thw)}
        for ids in torch.split(input_ids, lengths, dim=1):
            item_grids = {}
            for kind, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id)):
                count = _runs(ids[0], token_id)
                item_grids[kind] = torch.stack(grids[kind][:count]) if count else None
                grids[kind] = grids[kind][count:]
            positions = self.position_ids(ids, torch.ones_like(ids), item_grids["image"], item_grids["video"])
            pieces.append(positions.view(-1, 1, ids.shape[1]).expand(3, -1, -1))  # a text-only item: (1, n) rows
        return torch.cat(pieces, dim=-1)

    def _idle_vision(self) -> torch.Tensor:
        """Run the vision tower on one blank 28x28 image and return 0-weighted output.

        In training, every rank must call the same modules each step: sharded engines (ZeRO-3, FSDP) gather a
        module's weights collectively, and a rank whose batch holds only text would otherwise skip the vision
        tower while the others wait for it.
        """
        visual = self.model.visual
        patch = visual.patch_embed
        size = patch.in_channels * patch.temporal_patch_size * patch.patch_size**2
        weight = next(visual.parameters())
        pixels = torch.zeros(4, size, dtype=weight.dtype, device=weight.device)
        grid = torch.tensor([[1, 2, 2]], device=weight.device)
        out = visual(pixels, grid_thw=grid)
        out = getattr(out, "pooler_output", out)
        return out.float().sum()

    def position_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) sequential positions, or (3, B, L) M-RoPE positions from the library's own rule."""
        scheme = PositionScheme(self.position_scheme)
        if scheme is PositionScheme.SEQUENTIAL or (image_grid_thw is None and video_grid_thw is None):
            return sequential_positions(attention_mask)
        kwargs = {"image_grid_thw": image_grid_thw, "video_grid_thw": video_grid_thw, "attention_mask": attention_mask}
        if "mm_token_type_ids" in inspect.signature(self.model.get_rope_index).parameters:  # newer transformers
            image, video = self.config.image_token_id, self.config.video_token_id
            kwargs["mm_token_type_ids"] = (input_ids == image).int() + 2 * (input_ids == video).int()
        positions, _ = self.model.get_rope_index(input_ids, **kwargs)
        return positions


class LinearPatchEmbed(PatchEmbed):
    """transformers' Qwen2-VL patch embedding, run as the matrix product it is.

    The stock module is a Conv3d whose kernel equals its stride over (2, 14, 14) patches that arrive already cut
    out, flattened channel first; that is one linear map of each 1176-value row, with the conv's weight (same
    parameter, same state dict) viewed as (embed_dim, 1176). As a matrix product it runs 2x (tiny checkpoint) to
    4.5x (2B, float32) faster on the CPU than the convolution, equal to float rounding (summation order).
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return F.linear(hidden_states.to(dtype=weight.dtype), weight.view(weight.shape[0], -1))


def _rows(grid: torch.Tensor | None) -> list[torch.Tensor]:
    return list(grid) if grid is not None else []


def _runs(ids: torch.Tensor, token_id: int) -> int:
    """How many separate runs of ``token_id`` a 1-D id sequence holds: one per image (video) of the item."""
    hits = ids == token_id
    starts = hits[1:] & ~hits[:-1]
    return int(starts.sum()) + int(hits[:1].sum())


# --------------------------------------------------------------------------------------- attention per packed item


def _per_item_attention(kernel: Callable[..., Any], causal_mask: bool) -> Callable[..., Any]:
    """Wrap an attention kernel so that, given ``item_lengths``, it attends within each packed item only.

    Without ``item_lengths`` (padded batches) the kernel runs unchanged, mask and all. With them, query, key and
    value (1, heads, T, head_dim) are cut at the item boundaries and the kernel runs once per item with its own
    causal attention: SDPA with no mask (its ``is_causal`` path, so the flash / memory-efficient kernels and GQA
    without repeated keys stay available), eager with an (n, n) causal mask. Nothing of size T x T is built, and
    the arithmetic is that of the items run alone. This mirrors what transformers' Qwen2-VL vision tower does for
    its packed images under SDPA.
    """

    def attention(module, query, key, value, attention_mask, item_lengths=None, **kwargs):  # noqa: ANN001, ANN202
        if item_lengths is None:
            return kernel(module, query, key, value, attention_mask, **kwargs)
        outputs = []
        for q, k, v in zip(*(torch.split(tensor, item_lengths, dim=2) for tensor in (query, key, value))):
            mask = _causal_additive_mask(q.shape[2], q.dtype, q.device) if causal_mask else None
            outputs.append(kernel(module, q, k, v, mask, **kwargs)[0])
        return torch.cat(outputs, dim=1), None

    return attention


def _causal_additive_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, 1, n, n) additive causal mask: 0 on and below the diagonal, the dtype's minimum above."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[None, None]


#: The text layers' attention under packing: each name is the plain kernel's name wrapped by _per_item_attention.
_PACKED_ATTENTION = {"sdpa": "unite_packed_sdpa", "eager": "unite_packed_eager"}
AttentionInterface.register(
    _PACKED_ATTENTION["sdpa"], _per_item_attention(AttentionInterface._global_mapping["sdpa"], causal_mask=False)
)
AttentionInterface.register(_PACKED_ATTENTION["eager"], _per_item_attention(eager_attention_forward, causal_mask=True))
AttentionMaskInterface.register(_PACKED_ATTENTION["sdpa"], sdpa_mask)
AttentionMaskInterface.register(_PACKED_ATTENTION["eager"], eager_mask)


# --------------------------------------------------------------------------------------- memory and token budgets

#: Live activations per token and layer, in units of hidden size, at inference (residual stream, normed copy,
#: q/k/v/attention output, o_proj output), before the MLP's own ``3 * intermediate_size``.
_ACTIVATION_WIDTHS = 6
#: Margin over the estimate: allocator fragmentation, kernels' workspaces, the vision tower's own activations.
_ACTIVATION_SAFETY = 2.0


def activation_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Rough peak bytes of activations one token of a batch needs in the language model, at inference.

    Counts the widest moment of one decoder layer (the MLP's gate, up and activated tensors beside the residual
    stream and the attention projections), times :data:`_ACTIVATION_SAFETY`. Attention scores are not counted:
    SDPA per item and flash attention never hold a T x T matrix.

    Args:
        config: a Qwen2-VL config (its ``text_config`` is read) or the text config itself.
        dtype: the model's dtype.
    """
    text = getattr(config, "text_config", config)
    width = _ACTIVATION_WIDTHS * text.hidden_size + 3 * text.intermediate_size
    return int(width * torch.finfo(dtype).bits // 8 * _ACTIVATION_SAFETY)


def token_budget_from_memory(
    bytes_per_token: int,
    device: str | torch.device | None = None,
    fraction: float = 0.8,
    minimum: int = 1024,
    maximum: int = 262144,
    mem_get_info: Callable[[torch.device], tuple[int, int]] | None = None,
) -> int | None:
    """Tokens per batch that fit in the accelerator memory free now, or ``None`` when the device is not CUDA.

    Call it after the model is loaded, so the weights are already out of the free memory.

    Args:
        bytes_per_token: activation bytes one token needs (:func:`activation_bytes_per_token`).
        device: the model's device.
        fraction: share of the free memory given to one batch; the rest is left to the allocator and to the
            batches' varying shapes.
        minimum: never fewer tokens than this (one long item must still fit a batch of its own).
        maximum: never more (huge budgets only make batches slower to fill).
        mem_get_info: ``torch.cuda.mem_get_info`` (free, total bytes); replaceable for tests.

    Returns:
        ``fraction * free / bytes_per_token`` clamped to [``minimum``, ``maximum``], or ``None`` on CPU / MPS.
    """
    if bytes_per_token < 1 or not 0 < fraction <= 1 or not 1 <= minimum <= maximum:
        raise ValueError("need bytes_per_token >= 1, 0 < fraction <= 1 and 1 <= minimum <= maximum")
    target = torch.device(device) if device is not None else None
    if target is None or target.type != "cuda":
        return None
    free, _total = (mem_get_info or torch.cuda.mem_get_info)(target)
    return max(minimum, min(maximum, int(free * fraction) // bytes_per_token))
