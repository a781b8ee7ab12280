"""An independent reference pipeline written from docs/reference.md, used as the oracle of end-to-end tests.

Nothing here imports unite's data or model code: prompts are literal strings, the resize rule is written again
from its text, stage 2 uses transformers' own (PIL) Qwen2-VL image processor, video frames are decoded by a
plain sequential PyAV loop, and the network is transformers' stock Qwen2-VL loaded by transformers' own loader
and fed positions 0..L-1 on one unpadded sequence.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
IMAGE_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_BLOCK = "<|vision_start|><|video_pad|><|vision_end|>"


def prompt(content: str, modalities: str) -> str:
    return f"{SYSTEM}{content}\nSummary above {modalities} in one word:{TAIL}"


def rule_resize(h: int, w: int, lo: int, hi: int) -> tuple[int, int]:
    """docs/reference.md section 6 'smart resize', written from its text."""
    assert max(h, w) / min(h, w) <= 200
    nh, nw = max(28, round(h / 28) * 28), max(28, round(w / 28) * 28)
    if nh * nw > hi:
        beta = math.sqrt(h * w / hi)
        nh, nw = math.floor(h / beta / 28) * 28, math.floor(w / beta / 28) * 28
    elif nh * nw < lo:
        beta = math.sqrt(lo / (h * w))
        nh, nw = math.ceil(h * beta / 28) * 28, math.ceil(w * beta / 28) * 28
    return nh, nw


def _processor():
    try:  # newer transformers name the PIL-backed processor apart
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as Processor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as Processor

    return Processor(min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)


def image_stage1(image: Image.Image, hi: int = 16384 * 28 * 28) -> Image.Image:
    image = image.convert("RGB")
    h, w = rule_resize(image.height, image.width, 4 * 28 * 28, hi)
    return image.resize((w, h), Image.Resampling.BICUBIC)


def image_inputs(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(patches, grid) of one still image."""
    out = _processor()(images=[image_stage1(Image.open(path))], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def decode_all(path: str | Path) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def video_inputs(
    path: str | Path,
    count: int | None = None,
    fps: float = 1.0,
    lo_frames: int = 4,
    hi_frames: int = 32,
    max_pixels: int = 360 * 420,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(patches, grid) of a video file, sampling a fixed ``count`` or at ``fps``."""
    frames, rate = decode_all(path)
    total = len(frames)
    if count is not None:
        n = round(count / 2) * 2
    else:
        n = total / rate * fps
        n = min(max(n, math.ceil(lo_frames / 2) * 2), math.floor(hi_frames / 2) * 2)
        n = round(n / 2) * 2
    assert 2 <= n <= total
    index = torch.linspace(0, total - 1, n).round().long().tolist()
    clip = torch.from_numpy(np.stack([frames[i] for i in index])).permute(0, 3, 1, 2).float()
    h, w = rule_resize(clip.shape[2], clip.shape[3], 128 * 28 * 28, max_pixels)
    clip = F.interpolate(clip, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    clip = clip.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return _pairs([Image.fromarray(frame) for frame in clip])


def _pairs(frames: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2 of a video through the image processor, one frame at a time, pairing temporal slices."""
    processor = _processor()
    size = rule_resize(frames[0].height, frames[0].width, 256 * 28 * 28, 1280 * 28 * 28)
    per_frame = []
    for frame in frames:
        frame = frame.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        out = processor(images=[frame], return_tensors="pt")
        per_frame.append(out["pixel_values"].reshape(-1, 3, 2, 14 * 14))
        grid = out["image_grid_thw"][0]
    chunks = []
    for first, second in zip(per_frame[0::2], per_frame[1::2]):
        chunks.append(torch.stack([first[:, :, 0], second[:, :, 1]], dim=2).reshape(first.shape[0], -1))
    grid = torch.tensor([[len(chunks), int(grid[1]), int(grid[2])]])
    return torch.cat(chunks), grid


def embed(folder: str | Path, text: str, images=None, videos=None) -> np.ndarray:
    """The released models' embedding of one prompt string, through stock transformers."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    kwargs = {}
    for pad, media, key, grid_key in (
        ("<|image_pad|>", images, "pixel_values", "image_grid_thw"),
        ("<|video_pad|>", videos, "pixel_values_videos", "video_grid_thw"),
    ):
        if media:
            pieces = text.split(pad)
            assert len(pieces) == len(media) + 1
            text = pieces[0] + "".join(pad * (int(g.prod()) // 4) + rest for (_, g), rest in zip(media, pieces[1:]))
            kwargs[key] = torch.cat([m for m, _ in media])
            kwargs[grid_key] = torch.cat([g.reshape(1, 3) for _, g in media])
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    positions = torch.arange(ids.shape[1]).view(1, -1)
    with torch.no_grad():
        hidden = model.model(input_ids=ids, position_ids=positions, **kwargs).last_hidden_state
    vector = hidden[0, -1].float()
    return (vector / vector.norm()).numpy()
