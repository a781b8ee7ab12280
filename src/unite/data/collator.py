"""Items to token ids and pixel patches, and features to padded batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unite.data.media import VisualInput, load_image, load_video, probe_image, probe_video, visual_token_count
from unite.data.prompts import IMAGE_PAD, VIDEO_PAD, build_prompt
from unite.errors import InputError, UniteError
from unite.settings import EncodingSettings, Truncation
from unite.types import Item

__all__ = ["Batch", "Features", "ItemProcessor"]

#: Extra room counted for the prompt template when estimating lengths from the text alone.
_TEMPLATE_TOKENS = 40


@dataclass
class Features:
    """One item as the model takes it: token ids with expanded pad runs, and its visual inputs in order."""

    input_ids: list[int]
    images: list[VisualInput] = field(default_factory=list)
    videos: list[VisualInput] = field(default_factory=list)


Batch = dict[str, torch.Tensor]


class ItemProcessor:
    """Builds prompts, loads media and tokenizes, with the settings of one checkpoint.

    Args:
        tokenizer: the checkpoint's tokenizer (Qwen2 vocabulary with its special tokens).
        settings: pixel bounds, video sampling, length limits.
    """

    def __init__(self, tokenizer: Any, settings: EncodingSettings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        ids = tokenizer.convert_tokens_to_ids(
            [IMAGE_PAD, VIDEO_PAD, "<|vision_start|>", "<|vision_end|>", "<|endoftext|>"]
        )
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise UniteError("the tokenizer lacks Qwen2-VL's vision special tokens")
        self.image_pad_id, self.video_pad_id, self.vision_start_id, self.vision_end_id, self.endoftext_id = ids
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.endoftext_id

    def estimate_length(self, item: Item) -> int:
        """Tokens the item will take, from its text length and media headers only (no decoding)."""
        text, visual = self.token_counts(item)
        return text + _TEMPLATE_TOKENS + visual

    def token_counts(self, item: Item) -> tuple[int, int]:
        """(text tokens, visual tokens) of the item, from its text and media headers only (no decoding).

        Text tokens count the item's text and instruction, not the prompt template around them.
        """
        text = len(self.tokenizer(item.plain_text + (item.instruction or ""))["input_ids"])
        visual = 0
        for image in item.images:
            height, width = probe_image(image, self.settings)
            visual += visual_token_count("image", height, width, 1, self.settings)
        for video in item.videos:
            frames, height, width = probe_video(video, self.settings)
            kind = "frames" if isinstance(video, (list, tuple, np.ndarray)) else "video"
            visual += visual_token_count(kind, height, width, frames, self.settings)
        return text, visual

    def prepare(self, item: Item) -> Features:
        """Load the item's media and tokenize its prompt, expanding each pad token to its visual token count."""
        images = [load_image(source, self.settings) for source in item.images]
        videos = [load_video(source, self.settings) for source in item.videos]
        prompt = build_prompt(item, self.settings.system_prompt)
        ids = self.tokenizer(prompt)["input_ids"]
        ids = self._expand(ids, self.image_pad_id, [image.num_tokens for image in images], "image")
        ids = self._expand(ids, self.video_pad_id, [video.num_tokens for video in videos], "video")
        return Features(self._fit(ids), images, videos)

    def _expand(self, ids: list[int], pad_id: int, counts: list[int], kind: str) -> list[int]:
        if ids.count(pad_id) != len(counts):
            raise InputError(f"the prompt holds {ids.count(pad_id)} {kind} pad token(s) for {len(counts)} {kind}(s)")
        out: list[int] = []
        remaining = iter(counts)
        for token in ids:
            out.extend([pad_id] * next(remaining) if token == pad_id else [token])
        return out

    def _fit(self, ids: list[int]) -> list[int]:
        limit = self.settings.max_length
        if len(ids) <= limit:
            return ids
        if self.settings.truncation is Truncation.REFUSE:
            raise InputError(
                f"item is {len(ids)} tokens long, above max_length={limit}; shorten it, raise max_length or "
                "use truncation='left'"
            )
        cut = len(ids) - limit
        vision = {self.image_pad_id, self.video_pad_id, self.vision_start_id, self.vision_end_id}
        if any(token in vision for token in ids[:cut]):
            raise InputError(
                f"item is {len(ids)} tokens long, above max_length={limit}, and left truncation would cut "
                "into a vision block; refused"
            )
        return ids[cut:]

    def collate(self, features: list[Features], padding_side: str = "left") -> Batch:
        """Pad a list of features into model inputs.

        Returns:
            ``input_ids`` and ``attention_mask`` (B, L); ``pixel_values`` (patches, 1176) and ``image_grid_thw``
            (images, 3) when any item has an image; ``pixel_values_videos`` and ``video_grid_thw`` likewise.
        """
        length = max(len(feature.input_ids) for feature in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature.input_ids)
            span = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.tensor(feature.input_ids, dtype=torch.long)
            attention_mask[row, span] = 1
        batch: Batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        batch.update(_visual_batch(features))
        return batch

    def collate_packed(self, features: list[Features]) -> Batch:
        """Lay a list of features end to end into one packed sequence, with no padding.

        Returns:
            ``input_ids`` (1, T), T the sum of the items' lengths, in the items' order; ``cu_seqlens`` (B + 1,)
            int32 boundaries (``0, n_0, n_0 + n_1, ..., T``); the visual inputs as :meth:`collate` gives them
            (all images in item order, then all videos), so each pad run still meets its own visual tokens.
        """
        lengths = torch.tensor([len(feature.input_ids) for feature in features], dtype=torch.int32)
        cu_seqlens = torch.zeros(len(features) + 1, dtype=torch.int32)
        cu_seqlens[1:] = lengths.cumsum(0)
        input_ids = torch.tensor([token for feature in features for token in feature.input_ids], dtype=torch.long)
        batch: Batch = {"input_ids": input_ids.view(1, -1), "cu_seqlens": cu_seqlens}
        batch.update(_visual_batch(features))
        return batch


def _visual_batch(features: list[Features]) -> Batch:
    """``pixel_values`` / ``image_grid_thw`` and ``pixel_values_videos`` / ``video_grid_thw`` of the features' media."""
    batch: Batch = {}
    for kind, pixels_key, grid_key in (
        ("images", "pixel_values", "image_grid_thw"),
        ("videos", "pixel_values_videos", "video_grid_thw"),
    ):
        visuals = [visual for feature in features for visual in getattr(feature, kind)]
        if visuals:
            batch[pixels_key] = torch.from_numpy(np.concatenate([v.pixel_values for v in visuals]))
            batch[grid_key] = torch.tensor([v.grid_thw for v in visuals], dtype=torch.long)
    return batch
