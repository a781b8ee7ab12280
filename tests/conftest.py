"""Shared fixtures: tiny checkpoints in both layouts, encoders and synthetic media. Nothing touches the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from unite.models.loading import CURRENT_LAYOUT, LEGACY_LAYOUT  # noqa: E402
from unite.testing import make_image, make_tiny_checkpoint, make_video  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _extract_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Archives the evaluation loaders meet (a zip of videos) are extracted under the session's temporary folder,
    never into the user's ``~/.cache`` (a test may still point ``UNITE_EXTRACT_DIR`` elsewhere)."""
    os.environ["UNITE_EXTRACT_DIR"] = str(tmp_path_factory.mktemp("extracted"))


@pytest.fixture(scope="session")
def legacy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint in the transformers 4.47.1 layout of the released models."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("legacy"), layout=LEGACY_LAYOUT)


@pytest.fixture(scope="session")
def current_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same random weights (same seed) in the layout current transformers writes."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("current"), layout=CURRENT_LAYOUT)


@pytest.fixture(scope="session")
def encoder(legacy_checkpoint: Path):
    from unite import UniteEncoder

    return UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of odd sizes and modes, and two short mp4 clips."""
    folder = tmp_path_factory.mktemp("media")
    make_image(90, 130, seed=1).save(folder / "a.png")
    make_image(61, 47, seed=2).save(folder / "b.jpg", quality=95)
    make_image(80, 80, seed=3, mode="RGBA").save(folder / "rgba.png")
    make_image(70, 110, seed=4, mode="L").save(folder / "grey.png")
    make_video(folder / "clip.mp4", frames=24, fps=8, height=96, width=128, seed=5)
    make_video(folder / "long.mp4", frames=60, fps=10, height=64, width=80, seed=6, gop=5)
    for index in range(3):
        make_image(50, 60, seed=10 + index).save(folder / f"frame{index}.png")
    return folder
