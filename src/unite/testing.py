"""Tiny random UNITE checkpoints and synthetic media, for tests, benchmarks and demos. Nothing is downloaded.

The tiny checkpoint keeps the real vision layout (patch 14, spatial merge 2, temporal patch 2) and Qwen2-VL's
special tokens, with a byte-level BPE tokenizer trained here on a few sentences.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unite.models.loading import CURRENT_LAYOUT, LEGACY_LAYOUT

__all__ = [
    "SPECIAL_TOKENS",
    "ServerProcess",
    "free_port",
    "make_image",
    "make_tiny_checkpoint",
    "make_tokenizer",
    "make_video",
    "tiny_config",
]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_CORPUS = [
    "You are a helpful assistant.",
    "Summary above sentence in one word:",
    "Summary above image in one word:",
    "Summary above video in one word:",
    "Summary above sentence and image in one word:",
    "Summary above sentence and video in one word:",
    "system user assistant",
    "A red circle on a white background. A blue square. A green triangle next to a yellow star.",
    "What is the name of this place? Marina Beach. The book titled Riding with Reindeer.",
    "A timelapse of stormy clouds over the open sea and snowcapped mountains.",
    "Represent the given image with the following question:",
    "the quick brown fox jumps over the lazy dog 0123456789",
]


def make_tokenizer(vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer with Qwen2-VL's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def tiny_config(tokenizer: Any, tie_word_embeddings: bool = True, seed_layers: int = 2) -> Any:
    """A Qwen2-VL config a few hundred kilobytes large, with the real vision patch layout."""
    from transformers import Qwen2VLConfig

    ids = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    hidden = 64
    return Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": seed_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": tie_word_embeddings,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids[0],
        video_token_id=ids[1],
        vision_start_token_id=ids[2],
        vision_end_token_id=ids[3],
        tie_word_embeddings=tie_word_embeddings,
    )


#: The published Qwen2-VL-2B architecture (docs/reference.md section 1), for real-size runs with random weights.
QWEN2_VL_2B = {
    "text": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "mrope_section": [16, 24, 24],
    },
    "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4},
}


def qwen2_vl_2b_config(tokenizer: Any) -> Any:
    """The Qwen2-VL-2B configuration with ``tokenizer``'s special token ids (random weights; no download)."""
    config = tiny_config(tokenizer, tie_word_embeddings=True)
    text, vision = QWEN2_VL_2B["text"], QWEN2_VL_2B["vision"]
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    ):
        setattr(config.text_config, key, text[key])
    config.text_config.layer_types = ["full_attention"] * text["num_hidden_layers"]
    config.text_config.rope_parameters = {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": text["mrope_section"],
    }
    for key, value in vision.items():
        setattr(config.vision_config, key, value)
    config.vision_config.hidden_size = text["hidden_size"]
    return config


def make_tiny_checkpoint(
    folder: str | Path,
    layout: str = LEGACY_LAYOUT,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    size: str = "tiny",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a tiny random UNITE checkpoint folder in the 4.47.1 layout (as released) or the current one.

    The legacy folder mimics the released files: a flat config with ``"architectures": ["UniteQwen2VL"]`` and
    ``rope_scaling`` of type ``default``, no ``auto_map``, and tensors named ``model.layers.N.*`` / ``visual.*``
    (a tied ``lm_head`` left out, as 4.47.1 saved it). ``size="2b"`` uses the real Qwen2-VL-2B architecture
    (random weights, several GB; meant for GPU benchmarks).
    """
    from safetensors.torch import save_file

    from unite.models.modeling import UniteQwen2VL

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    config = tiny_config(tokenizer, tie_word_embeddings) if size == "tiny" else qwen2_vl_2b_config(tokenizer)
    torch.manual_seed(seed)
    model = UniteQwen2VL(config).eval().to(dtype)
    if size == "tiny":
        with torch.no_grad():  # random init is tiny; widen it so that inputs visibly change the embeddings
            for name, parameter in model.named_parameters():
                if parameter.ndim >= 2 and "embed_tokens" not in name:
                    parameter.normal_(0.0, 0.2)
    tokenizer.save_pretrained(folder)
    if layout == CURRENT_LAYOUT:
        model.save_pretrained(folder)
        return folder
    if layout != LEGACY_LAYOUT:
        raise ValueError(f"unknown layout {layout!r}")
    state = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and tie_word_embeddings:
            continue
        if key.startswith("model.visual."):
            key = key.removeprefix("model.")
        elif key.startswith("model.language_model."):
            key = "model." + key.removeprefix("model.language_model.")
        state[key] = tensor.contiguous().clone()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.text_config.dtype = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(_legacy_config(config), indent=2) + "\n")
    return folder


def _legacy_config(config: Any) -> dict[str, Any]:
    """A flat 4.47.1-style config.json for ``config``."""
    text = config.text_config
    rope = dict(text.rope_parameters)
    return {
        "architectures": ["UniteQwen2VL"],
        "model_type": "qwen2_vl",
        "attention_dropout": 0.0,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
        "hidden_act": "silu",
        "hidden_size": text.hidden_size,
        "image_token_id": config.image_token_id,
        "initializer_range": 0.02,
        "intermediate_size": text.intermediate_size,
        "max_position_embeddings": text.max_position_embeddings,
        "max_window_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_hidden_layers": text.num_hidden_layers,
        "num_key_value_heads": text.num_key_value_heads,
        "rms_norm_eps": text.rms_norm_eps,
        "rope_scaling": {"type": "default", "mrope_section": rope["mrope_section"], "rope_type": "default"},
        "rope_theta": rope["rope_theta"],
        "sliding_window": 32768,
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": str(config.text_config.dtype or "float32").removeprefix("torch."),
        "transformers_version": "4.47.1",
        "use_cache": True,
        "use_sliding_window": False,
        "video_token_id": config.video_token_id,
        "vision_config": {
            "depth": config.vision_config.depth,
            "embed_dim": config.vision_config.embed_dim,
            "hidden_size": config.vision_config.hidden_size,
            "hidden_act": "quick_gelu",
            "mlp_ratio": config.vision_config.mlp_ratio,
            "num_heads": config.vision_config.num_heads,
            "in_chans": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        "vision_end_token_id": config.vision_end_token_id,
        "vision_start_token_id": config.vision_start_token_id,
        "vision_token_id": config.vision_start_token_id + 2,
        "vocab_size": text.vocab_size,
    }


def make_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Any:
    """A PIL image of smooth colour gradients plus noise, so that resizes differ visibly."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) * 127 // max(height + width, 1))],
        axis=-1,
    )
    noise = rng.integers(0, 64, size=(height, width, 3))
    rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode != "RGB":
        image = image.convert(mode)
    return image


def make_video(
    path: str | Path, frames: int = 24, fps: int = 8, height: int = 120, width: int = 160, seed: int = 0, gop: int = 12
) -> Path:
    """Write an H.264 mp4 whose frame i has a brightness that encodes i (readable back as ``frame_number``)."""
    import av

    path = Path(path)
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "10", "bf": "0"}
        for index in range(frames):
            frame = np.clip(texture.astype(int) + frame_level(index), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_level(index: int) -> int:
    """Brightness offset that :func:`make_video` gives frame ``index``."""
    return (index * 7) % 200


def frame_number(frame: np.ndarray, frames: int) -> int:
    """Recover the index of a decoded :func:`make_video` frame from its mean brightness."""
    level = float(np.asarray(frame, dtype=np.float64).mean()) - 19.5
    return min(range(frames), key=lambda index: abs(frame_level(index) - level))


# ------------------------------------------------------------------------------------------- training data

SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(colour: str, shape: str, seed: int, size: int = 84) -> Any:
    """A PIL image of one coloured shape at a random place and scale on a white background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    extent = int(rng.integers(size // 3, size - 8))
    x, y = (int(v) for v in rng.integers(2, size - extent - 2, size=2))
    box = [x, y, x + extent, y + extent]
    fill = SHAPE_COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x + extent // 2, y), (x, y + extent), (x + extent, y + extent)], fill=fill)
    return image


def make_shapes_dataset(folder: str | Path, per_class: int = 8, seed: int = 0, prefix: str = "train") -> Path:
    """Write images of coloured shapes with captions as UNITE pairs (``{prefix}.jsonl``); 12 classes.

    Each record is ``{"query": {"text": "a red circle"}, "candidate": {"image": ...}, "target_modal": "image"}``
    plus a text-to-text pair per class (``"a red circle"`` to ``"a circle coloured red"``) so that the modality
    mix has more than one target modality.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for colour in SHAPE_COLOURS:
        for shape in SHAPES:
            for index in range(per_class):
                name = f"images/{prefix}_{colour}_{shape}_{index}.png"
                draw_shape(colour, shape, seed=zlib.crc32(f"{seed}/{prefix}/{colour}/{shape}/{index}".encode())).save(
                    folder / name
                )
                lines.append(
                    {
                        "query": {"text": f"a {colour} {shape}"},
                        "candidate": {"image": name},
                        "target_modal": "image",
                        "id": f"{colour}-{shape}-{index}",
                    }
                )
            caption = {"text": f"a {shape} coloured {colour}"}
            lines.append({"query": {"text": f"a {colour} {shape}"}, "candidate": caption, "target_modal": "text"})
    path = folder / f"{prefix}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


class ServerProcess:
    """``unite serve`` in a subprocess on 127.0.0.1 and a free port, for tests and benchmarks; stop it by
    :meth:`stop` (terminate, then kill by process id). Its output goes to ``log``.

    Args:
        index: the index folder.
        log: file receiving the server's output.
        *extra: further ``unite serve`` flags.
        env: environment variables to add (an API key, say).
        start_timeout: seconds to wait for ``/healthz``.
    """

    def __init__(
        self, index: str | Path, log: str | Path, *extra: str, env: dict | None = None, start_timeout: float = 120
    ) -> None:
        import os
        import subprocess
        import sys
        import time

        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        command = [sys.executable, "-m", "unite.cli.main", "serve", "--index", str(index), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--device", "cpu", *extra]
        self._log_handle = self.log.open("w")
        environment = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
        self.process = subprocess.Popen(command, stdout=self._log_handle, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_handle.close()
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def alive(self) -> bool:
        import httpx

        return self.process.poll() is None and httpx.get(self.url + "/healthz", timeout=5).status_code == 200

    def rss_mb(self) -> float:
        """Resident memory of the server process in MiB (Linux), NaN when unknown."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return float("nan")
        lines = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(lines[0].split()[1]) / 1024 if lines else float("nan")

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
