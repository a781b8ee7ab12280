"""Strict checkpoint loading in both weight layouts, device and dtype choice.

The released checkpoints were saved by transformers 4.47.1 (``model.layers.N``, ``visual.*``); current
transformers names the same tensors ``model.language_model.*`` and ``model.visual.*``. The mapping between
them is written here rather than left to transformers' loader because that loader is lenient: a key it cannot
map is reported as a warning and the tensor keeps its random initialisation, which is how a half-loaded
model that returns garbage ships unnoticed. Here every tensor must be mapped, else :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unite.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "LEGACY_LAYOUT",
    "CURRENT_LAYOUT",
    "FINGERPRINT_BLOCK",
    "FINGERPRINT_FRACTIONS",
    "detect_layout",
    "load_weights",
    "match_weights",
    "tied_names",
    "resolve_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "to_current_layout",
    "weights_fingerprint",
]

LEGACY_LAYOUT = "transformers-4.47"
CURRENT_LAYOUT = "transformers-5"
RELEASED_CHECKPOINTS = (
    "friedrichor/Unite-Base-Qwen2-VL-2B",
    "friedrichor/Unite-Base-Qwen2-VL-7B",
    "friedrichor/Unite-Instruct-Qwen2-VL-2B",
    "friedrichor/Unite-Instruct-Qwen2-VL-7B",
)
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Weight files whose fingerprint is taken (sorted by name).
WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: Bytes of each block sampled from a weight file, and where the blocks start (a fraction ``f`` puts the block at
#: byte ``int(f * (size - FINGERPRINT_BLOCK))``; 0 is the first block, 1 the last).
FINGERPRINT_BLOCK = 64 * 1024
FINGERPRINT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Largest safetensors header read whole (the headers of multi-GB checkpoints are a few hundred KB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The asked device, else cuda when available, else mps, else cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The asked dtype, else bfloat16 on a GPU and float32 on the CPU."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[name]


def resolve_checkpoint(
    name_or_path: str | Path, revision: str | None = None, token: str | None = None, local_files_only: bool = False
) -> Path:
    """A local checkpoint folder, downloading a Hub repository when ``name_or_path`` is not a folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(f"{text}: not a checkpoint folder, nor a Hugging Face repository id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            text,
            revision=revision,
            token=token,
            allow_patterns=_DOWNLOAD_PATTERNS,
            local_files_only=local_files_only,
        )
    except Exception as error:  # huggingface_hub raises many unrelated types for one failure
        hint = " (the Hub cannot be reached or HF_HUB_OFFLINE is set; pass a local folder)"
        raise CheckpointError(f"{text}: cannot fetch from the Hugging Face Hub: {error}{hint}") from None
    return Path(folder)


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder: one safetensors file, a sharded set, or a PyTorch ``.bin``."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / shard for shard in shards]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{file}: shard listed in the index is missing")
        try:
            state.update(load_file(str(file)))
        except Exception as error:  # safetensors raises its own untyped errors for corrupt files
            raise CheckpointError(f"{file}: cannot read tensors ({error})") from None
    return state


def detect_layout(keys: list[str]) -> str:
    """Which transformers layout the tensor names follow."""
    if any(key.startswith(("model.language_model.", "model.visual.")) for key in keys):
        return CURRENT_LAYOUT
    if any(key.startswith(("model.layers.", "visual.", "model.embed_tokens.")) for key in keys):
        return LEGACY_LAYOUT
    raise CheckpointError(
        "tensor names follow no known Qwen2-VL layout (expected model.layers.* or model.language_model.*)"
    )


def to_current_layout(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Rename tensors to the current layout.

    Returns:
        (renamed state dict, map from new name to the name in the file, detected layout).
    """
    layout = detect_layout(list(state))
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in state.items():
        new = _current_name(key) if layout == LEGACY_LAYOUT else key
        renamed[new] = tensor
        origin[new] = key
    return renamed, origin, layout


def _current_name(key: str) -> str:
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        return "model.language_model." + key.removeprefix("model.")
    return key


def load_weights(model: torch.nn.Module, folder: Path) -> str:
    """Load every tensor of ``folder`` into ``model``, strictly; returns the layout the file used.

    Raises:
        CheckpointError: a tensor of the model is missing from the file (a tied ``lm_head`` excepted), a tensor
            of the file has no place in the model, or shapes differ. The message names them.
    """
    state, origin, layout = to_current_layout(read_state_dict(folder))
    tied = tied_names(model)
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    match = match_weights(expected, {key: tuple(tensor.shape) for key, tensor in state.items()}, origin, tied)
    if match.missing or match.unexpected:
        raise CheckpointError(f"{folder}: weights do not match the model ({layout} layout): {match.describe()}")
    if match.wrong_shapes:
        raise CheckpointError(f"{folder}: tensor shapes differ from the config: {'; '.join(match.wrong_shapes[:5])}")
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()  # the model was built without initialisation: point lm_head at the loaded embeddings
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
    logger.info("loaded %d tensors from %s (%s layout)", len(state), folder, layout)
    return layout


def tied_names(model: Any) -> set[str]:
    """Tensors a checkpoint may leave out because they share another's storage (a tied ``lm_head``)."""
    if getattr(model.config, "tie_word_embeddings", False) or getattr(
        getattr(model.config, "text_config", None), "tie_word_embeddings", False
    ):
        return {"lm_head.weight"}
    return set()


@dataclass(frozen=True)
class WeightsMatch:
    """How a checkpoint's tensors meet a model's: what is missing, unexpected, or of the wrong shape."""

    missing: list[str]
    unexpected: list[str]
    wrong_shapes: list[str]

    def describe(self, shown: int = 8) -> str:
        """``1 missing: NAME; 2 unexpected: NAME, NAME`` (the first ``shown`` names of each kind)."""
        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                more = f" and {len(names) - shown} more" if len(names) > shown else ""
                parts.append(f"{len(names)} {label}: {', '.join(names[:shown])}{more}")
        return "; ".join(parts)


def match_weights(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    origin: Mapping[str, str],
    tied: set[str],
    rename: Callable[[str], str] | None = None,
) -> WeightsMatch:
    """The one strict comparison of loading (and of ``unite doctor``): every model tensor present (``tied`` ones
    excepted), none left over, shapes equal.

    Args:
        expected: the model's tensor names (current layout) and shapes.
        found: the checkpoint's, renamed to the current layout (:func:`to_current_layout`).
        origin: current name -> the name the file spells, for messages.
        tied: names the file may leave out.
        rename: how to spell a missing (current-layout) name in messages; default as it is.
    """
    rename = rename or (lambda key: key)
    return WeightsMatch(
        missing=sorted(rename(key) for key in set(expected) - set(found) - tied),
        unexpected=sorted(origin[key] for key in set(found) - set(expected)),
        wrong_shapes=sorted(
            f"{origin[key]} {shape} vs {expected[key]}"
            for key, shape in found.items()
            if key in expected and tuple(shape) != tuple(expected[key])
        ),
    )


def weights_fingerprint(folder: str | Path, base_fingerprint: str | None = None) -> str:
    """A cheap sha256 that changes when the weights of a checkpoint folder change, wherever the folder lives.

    Covers every ``*.safetensors`` / ``*.bin`` file (sorted by name): its name, its size, its safetensors header
    (tensor names, dtypes, shapes, offsets) and ``FINGERPRINT_BLOCK`` bytes at each of ``FINGERPRINT_FRACTIONS``
    of the file; nothing else is read, so a multi-GB checkpoint costs a few hundred KB of reads. A change between
    the sampled blocks that keeps the size and header goes unseen (fine-tuning changes every block). A LoRA
    adapter folder also covers ``adapter_config.json`` (without the base's location) and the base's fingerprint.

    Args:
        folder: a checkpoint or adapter folder.
        base_fingerprint: for an adapter, the fingerprint of its base when already known (else it is computed
            from the base it records, which must then be a local folder or in the Hub cache).

    Raises:
        CheckpointError: the folder holds no weight file, or one cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    files = sorted(path for path in folder.iterdir() if path.suffix in WEIGHT_SUFFIXES and path.is_file())
    if not files:
        raise CheckpointError(f"{folder}: no weight files (*.safetensors, *.bin) to fingerprint")
    digest = hashlib.sha256(b"unite-weights-fingerprint-v1\0")
    adapter = folder / "adapter_config.json"
    if adapter.is_file() and not (folder / "config.json").is_file():
        digest.update(_adapter_part(adapter, base_fingerprint))
    for path in files:
        try:
            _fingerprint_file(path, digest)
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read ({error})") from None
    return digest.hexdigest()


def _adapter_part(adapter: Path, base_fingerprint: str | None) -> bytes:
    """What an adapter adds to its fingerprint: its config without the base's location, and the base's weights."""
    try:
        config = json.loads(adapter.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{adapter}: cannot read the adapter config ({error})") from None
    base = config.pop("base_model_name_or_path", None) if isinstance(config, dict) else None
    if base_fingerprint is None:
        if not base:
            raise CheckpointError(f"{adapter}: no base_model_name_or_path recorded")
        base_fingerprint = weights_fingerprint(resolve_checkpoint(base, local_files_only=True))
    return json.dumps(config, sort_keys=True).encode() + b"\0" + base_fingerprint.encode()


def _fingerprint_file(path: Path, digest: Any) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as stream:
        if path.suffix == ".safetensors":
            length = int.from_bytes(stream.read(8), "little")
            digest.update(stream.read(min(length, _MAX_HEADER_BYTES)))
        for fraction in FINGERPRINT_FRACTIONS:
            stream.seek(int(fraction * max(size - FINGERPRINT_BLOCK, 0)))
            digest.update(stream.read(FINGERPRINT_BLOCK))
