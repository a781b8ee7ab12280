"""The UNITE network: Qwen2-VL whose forward returns L2-normalised last-token embeddings."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import Qwen2VLForConditionalGeneration

from unite.settings import PositionScheme

__all__ = ["UniteQwen2VL", "last_token_pool", "sequential_positions"]


def sequential_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Plain 1-D positions 0..n-1 over the real tokens of each row, whatever the padding side.

    Args:
        attention_mask: (B, L), 1 for real tokens.

    Returns:
        (B, L) long positions; padding gets 0. RoPE depends only on position differences, so this equals the
        released models' 0..L-1 numbering up to float noise, and is the same for every padding.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


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

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embed a padded batch.

        Args:
            input_ids: (B, L) token ids with expanded vision pad runs.
            attention_mask: (B, L).
            pixel_values: (image patches, 1176) of all images in order, with ``image_grid_thw`` (images, 3).
            pixel_values_videos: (video patches, 1176), with ``video_grid_thw`` (videos, 3).
            normalize: L2-normalise the embeddings.

        Returns:
            (B, D) float32 embeddings.
        """
        position_ids = self.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            use_cache=False,
        )
        embeddings = last_token_pool(outputs.last_hidden_state, attention_mask).float()
        if self.training and pixel_values is None and pixel_values_videos is None:
            embeddings = embeddings + 0.0 * self._idle_vision()
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

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
