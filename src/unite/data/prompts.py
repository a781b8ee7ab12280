"""The one place where prompt strings are built (docs/reference.md section 3)."""

from __future__ import annotations

from unite.settings import PROMPT_TEMPLATE, SYSTEM_PROMPT
from unite.types import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Item

__all__ = ["IMAGE_BLOCK", "VIDEO_BLOCK", "build_content", "build_prompt"]

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
IMAGE_BLOCK = f"<|vision_start|>{IMAGE_PAD}<|vision_end|>"
VIDEO_BLOCK = f"<|vision_start|>{VIDEO_PAD}<|vision_end|>"


def build_content(item: Item) -> str:
    """The user turn's content: instruction, text and vision blocks, stripped.

    Placeholders become vision blocks in place. Media without placeholders go before the text, images first,
    as the quick start's chat messages place them. An instruction goes before the text, joined by a space.
    """
    text = (item.text or "").strip()
    if item.instruction:
        text = f"{item.instruction.strip()} {text}".strip()
    prefix = ""
    if IMAGE_PLACEHOLDER not in text:
        prefix += IMAGE_BLOCK * len(item.images)
    if VIDEO_PLACEHOLDER not in text:
        prefix += VIDEO_BLOCK * len(item.videos)
    text = text.replace(IMAGE_PLACEHOLDER, IMAGE_BLOCK).replace(VIDEO_PLACEHOLDER, VIDEO_BLOCK)
    return (prefix + text).strip()


def build_prompt(item: Item, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The whole input string of an item, ending with ``<|endoftext|>`` (before pad expansion)."""
    return PROMPT_TEMPLATE.format(
        system=system_prompt, content=build_content(item), modalities=item.modality.prompt_words
    )
