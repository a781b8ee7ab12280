"""End to end: unite's embeddings equal the independent reference pipeline (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref

COSINE = 0.99999


def _cases(media):
    a, b, clip = str(media / "a.png"), str(media / "b.jpg"), str(media / "clip.mp4")
    return {
        "text": (
            "A timelapse of stormy clouds over the open sea.",
            {"text": "A timelapse of stormy clouds over the open sea."},
            ref.prompt("A timelapse of stormy clouds over the open sea.", "sentence"),
            None,
            None,
        ),
        "image": ("image", {"image": a}, ref.prompt(ref.IMAGE_BLOCK, "image"), [ref.image_inputs(a)], None),
        "fused": (
            "fused",
            {"text": "What is the name of this place?", "image": a},
            ref.prompt(ref.IMAGE_BLOCK + "What is the name of this place?", "sentence and image"),
            [ref.image_inputs(a)],
            None,
        ),
        "multi_image": (
            "multi",
            {"text": "<|IMAGE|> left, <|IMAGE|> right", "image": [a, b]},
            ref.prompt(f"{ref.IMAGE_BLOCK} left, {ref.IMAGE_BLOCK} right", "sentence and image"),
            [ref.image_inputs(a), ref.image_inputs(b)],
            None,
        ),
        "video_rate": (
            "video",
            {"video": clip},
            ref.prompt(ref.VIDEO_BLOCK, "video"),
            None,
            [ref.video_inputs(clip, fps=1.0)],
        ),
        "fused_video": (
            "fused video",
            {"text": "stormy sea", "video": clip},
            ref.prompt(ref.VIDEO_BLOCK + "stormy sea", "sentence and video"),
            None,
            [ref.video_inputs(clip, fps=1.0)],
        ),
    }


@pytest.fixture(scope="module")
def expected(current_checkpoint, media_dir):
    cases = _cases(media_dir)
    return {
        name: ref.embed(current_checkpoint, text, images, videos)
        for name, (_, _, text, images, videos) in cases.items()
    }, cases


@pytest.mark.parametrize("batch_size", [1, 8])
def test_released_layout_matches_reference(encoder, expected, batch_size):
    vectors, cases = expected
    items = [item for _, item, *_ in cases.values()]
    got = encoder.encode(items, batch_size=batch_size)
    for (name, want), row in zip(vectors.items(), got):
        assert float(np.dot(want, row)) >= COSINE, name


def test_fixed_frame_count_matches_reference(legacy_checkpoint, current_checkpoint, media_dir):
    from unite import UniteEncoder

    clip = str(media_dir / "clip.mp4")
    encoder = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu", video_frames=6)
    want = ref.embed(current_checkpoint, ref.prompt(ref.VIDEO_BLOCK, "video"), None, [ref.video_inputs(clip, count=6)])
    for batch_size in (1, 8):
        got = encoder.encode([{"video": clip}, "filler text"], batch_size=batch_size)[0]
        assert float(np.dot(want, got)) >= COSINE


def test_frame_list_video_matches_reference(encoder, current_checkpoint, media_dir):
    from PIL import Image

    paths = [str(media_dir / f"frame{i}.png") for i in range(3)]
    frames = [ref.image_stage1(Image.open(p), hi=360 * 420) for p in paths]
    frames.append(frames[-1])  # odd count: the last frame repeats
    want = ref.embed(current_checkpoint, ref.prompt(ref.VIDEO_BLOCK, "video"), None, [ref._pairs(frames)])
    got = encoder.encode([{"video": paths}])[0]
    assert float(np.dot(want, got)) >= COSINE
