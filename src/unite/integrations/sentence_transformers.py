"""UNITE as a sentence-transformers model: the input module, and the export of a checkpoint to a loadable folder.

A released UNITE checkpoint loaded natively by sentence-transformers would be embedded wrongly: its stock
Qwen2-VL forward numbers vision tokens with 3-D positions, it knows neither UNITE's prompt nor its two-stage pixel
pipeline. :class:`UniteModule` instead runs unite's own item parsing, prompt builder, pixel pipeline and 1-D
position forward, so ``SentenceTransformer(folder, trust_remote_code=True).encode(...)`` equals
:meth:`unite.UniteEncoder.encode` on the same items.

:func:`export` writes such a folder: a unite checkpoint (weights, tokenizer, ``unite_config.json``) plus
``modules.json``, ``config_sentence_transformers.json`` and ``unite_sentence_transformers.py``, a shim that imports
this module, so fixes ship with unite rather than with each exported folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unite.data.collator import Batch, Features, ItemProcessor
from unite.errors import CheckpointError, ConfigError, InputError, UniteError
from unite.models.encoder import UniteEncoder
from unite.models.loading import resolve_checkpoint
from unite.models.modeling import UniteQwen2VL
from unite.settings import EncodingSettings
from unite.types import VIDEO_EXTENSIONS, Item, to_item

try:
    import sentence_transformers
    from sentence_transformers.base.modality import is_image_url_or_path, is_video_url_or_path
    from sentence_transformers.base.modules import InputModule
except ImportError:
    raise ConfigError(
        "the sentence-transformers integration needs sentence-transformers>=5.4: pip install 'unite-embed[st]'"
    ) from None

logger = logging.getLogger(__name__)

__all__ = ["ENTRY_FILE", "UniteModule", "export"]

#: The custom-module file an exported folder holds; ``modules.json`` names its class.
ENTRY_FILE = "unite_sentence_transformers.py"
ENTRY_CLASS = "UniteModule"
_ENTRY_TEMPLATE = Path(__file__).with_name("sentence_transformers_entry.py")
#: Prompt names sentence-transformers' ``encode_query`` / ``encode_document`` look up; empty means no instruction.
DEFAULT_PROMPTS = {"query": "", "document": ""}
_MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
)
_DTYPE_KEYS = ("dtype", "torch_dtype")


class UniteModule(InputModule):
    """The whole UNITE embedder as one sentence-transformers input module.

    ``preprocess`` turns each input into a unite :class:`~unite.types.Item` (a sentence-transformers prompt
    becomes the item's instruction), builds its prompt and pixels exactly as :class:`unite.UniteEncoder` does, and
    pads the batch; ``forward`` runs the 1-D position forward and returns L2-normalised ``sentence_embedding``.

    Args:
        model: the network.
        tokenizer: its tokenizer.
        settings: encoding settings (pixel bounds, video sampling, positions, limits).
    """

    save_in_root = True

    def __init__(self, model: UniteQwen2VL, tokenizer: Any, settings: EncodingSettings) -> None:
        super().__init__()
        self.model = model
        self.model.position_scheme = settings.position_scheme
        self.tokenizer = tokenizer
        self.settings = settings
        self.processor = ItemProcessor(tokenizer, settings)

    @classmethod
    def from_encoder(cls, encoder: UniteEncoder) -> UniteModule:
        """The module of a loaded :class:`unite.UniteEncoder` (sharing its weights)."""
        return cls(encoder.model, encoder.tokenizer, encoder.settings)

    # ----------------------------------------------------------------------------------------- what ST asks of it

    @property
    def modalities(self) -> list[Any]:
        """Text, images, videos, and any mix of them in one input or one batch (``message``: mixed batches)."""
        return ["text", "image", "video", ("image", "text"), ("text", "video"), ("image", "video"), "message"]

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def max_seq_length(self) -> int:
        """The longest token sequence accepted (``max_length`` of the encoding settings)."""
        return self.settings.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.settings = self.settings.replace(max_length=value)
        self.processor = ItemProcessor(self.tokenizer, self.settings)

    def get_config_dict(self) -> dict[str, Any]:
        """What ``repr`` shows; the settings themselves are saved in ``unite_config.json``."""
        return {
            "embedding_dimension": self.get_embedding_dimension(),
            "position_scheme": self.settings.position_scheme.value,
            "max_length": self.settings.max_length,
        }

    # -------------------------------------------------------------------------------------------- inputs, forward

    def preprocess(
        self,
        inputs: Sequence[Any],
        prompt: str | None = None,
        task: str | None = None,
        max_length: int | None = None,
        processing_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Batch:
        """Prepare a batch of inputs: parse, build prompts, load media, tokenize, pad on the left.

        Args:
            inputs: strings (text, or an existing image or video file path, as sentence-transformers reads them),
                PIL images, uint8 arrays (H, W[, C]) as images and (T, H, W[, C]) as videos, dicts
                ``{"text", "image", "video", "instruction"}`` or :class:`~unite.types.Item` objects.
            prompt: sentence-transformers' prompt, used as the instruction of every input (before the text).
            task: ``query`` or ``document`` from ``encode_query`` / ``encode_document``; UNITE embeds both the same
                way (only the prompt differs), so it is not used.
            max_length: a training-time override of the longest token sequence.

        Returns:
            ``input_ids`` and ``attention_mask`` (B, L); ``pixel_values`` / ``image_grid_thw`` and
            ``pixel_values_videos`` / ``video_grid_thw`` when present; ``num_images_per_sample`` and
            ``num_videos_per_sample`` (B,), which sentence-transformers' cached losses use to split a batch.

        Raises:
            InputError: an input cannot be embedded; MediaError: its media cannot be read; ConfigError: an
            option UNITE does not have.
        """
        _refuse_options(processing_kwargs, kwargs)
        processor = self.processor
        if max_length is not None and max_length != self.settings.max_length:
            processor = ItemProcessor(self.tokenizer, self.settings.replace(max_length=max_length))
        features = [_prepare(processor, value, prompt) for value in inputs]
        batch = processor.collate(features)
        batch["num_images_per_sample"] = torch.tensor([len(feature.images) for feature in features])
        batch["num_videos_per_sample"] = torch.tensor([len(feature.videos) for feature in features])
        return batch

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Add ``sentence_embedding`` (B, D), float32 and L2-normalised, to the features."""
        inputs = {key: features[key] for key in _MODEL_INPUTS if key in features}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.model.dtype)
        features["sentence_embedding"] = self.model(**inputs)
        return features

    # -------------------------------------------------------------------------------------------- saving, loading

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write the unite checkpoint (weights, tokenizer, ``unite_config.json``) into ``output_path``."""
        training = self.model.training
        UniteEncoder(self.model, self.tokenizer, self.settings).save_pretrained(output_path)
        self.model.train(training)  # UniteEncoder puts the model in eval mode; a save mid-training must not

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        **kwargs: Any,
    ) -> UniteModule:
        """Load the unite checkpoint of a sentence-transformers folder (local or on the Hub), strictly, on the CPU.

        ``model_kwargs`` may hold ``dtype`` (or ``torch_dtype``; ``"auto"`` keeps the stored dtype; default
        float32), ``attn_implementation`` and any :class:`~unite.settings.EncodingSettings` field, e.g.
        ``{"video_frames": 48}``. sentence-transformers moves the module to its device afterwards.
        """
        if backend != "torch":
            raise ConfigError(f"UNITE runs on the torch backend only, got backend={backend!r}")
        if processor_kwargs or config_kwargs:
            raise ConfigError("UNITE takes no processor_kwargs or config_kwargs; pass settings in model_kwargs")
        folder = cls.load_dir_path(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        if folder is None:
            raise CheckpointError(f"{model_name_or_path}: no folder {subfolder!r} holding a UNITE checkpoint")
        options = dict(model_kwargs or {})
        dtype = _pop_dtype(options, Path(folder))
        encoder = UniteEncoder.from_pretrained(folder, device="cpu", dtype=dtype, **options)
        return cls.from_encoder(encoder)


def _refuse_options(processing_kwargs: Mapping[str, Any] | None, extra: dict[str, Any]) -> None:
    if processing_kwargs:
        raise ConfigError(
            "UNITE's pixel pipeline takes no processing_kwargs; change encoding settings with "
            "model_kwargs when loading, e.g. model_kwargs={'video_frames': 16}"
        )
    unknown = sorted(key for key, value in extra.items() if value is not None)
    if unknown:
        raise ConfigError(f"unknown preprocessing option(s) for UNITE: {', '.join(unknown)}")


def _prepare(processor: ItemProcessor, value: Any, prompt: str | None) -> Features:
    """One input's features; any failure raised as a unite error naming the input (never TypeError, which
    sentence-transformers would take as "no prompt support" and retry without the prompt)."""
    try:
        return processor.prepare(_st_item(value, prompt))
    except UniteError as error:
        raise type(error)(f"{_describe(value)}: {error}") from None
    except Exception as error:  # any other failure of one input is that input's error, typed
        raise InputError(f"{_describe(value)}: {type(error).__name__}: {error}") from error


def _st_item(value: Any, prompt: str | None = None) -> Item:
    """An :class:`Item` from an input as sentence-transformers passes it, with ``prompt`` as its instruction.

    Strings are text, except an existing image or video file (or an http(s) URL of one), which sentence-
    transformers reads as that medium; ``pathlib.Path`` objects are media by suffix; uint8 arrays are images
    (2 or 3 dimensions) or videos (4 dimensions). A prompt and an instruction of a dict that differ conflict.
    """
    item = _parse(value)
    if not prompt or not prompt.strip():
        return item
    if item.instruction and item.instruction.strip() != prompt.strip():
        raise InputError(
            f"the input's instruction {item.instruction!r} conflicts with the prompt {prompt!r}; give one of them"
        )
    return item.with_instruction(prompt)


def _parse(value: Any) -> Item:
    if isinstance(value, str):
        if is_video_url_or_path(value):
            return Item(videos=(value,))
        if is_image_url_or_path(value):
            return Item(images=(value,))
        return Item(text=value)
    if isinstance(value, Path):
        return Item(videos=(str(value),)) if value.suffix.lower() in VIDEO_EXTENSIONS else Item(images=(str(value),))
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return Item(videos=(value,))
    if _is_chat(value):
        raise InputError("chat messages are not UNITE inputs; pass text, an image, a video or a dict of them")
    if isinstance(value, torch.Tensor):
        raise InputError("torch tensors are not read as media; pass a PIL image or a uint8 numpy array (H, W, C)")
    return to_item(value)


def _is_chat(value: Any) -> bool:
    """A chat message ``{"role", "content"}`` or a conversation (a list of them), as sentence-transformers takes."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, Mapping) and "role" in value and "content" in value


def _describe(value: Any, limit: int = 80) -> str:
    """A short name of an input for error messages (sentence-transformers reorders inputs, so no index)."""
    if isinstance(value, (str, Mapping, Path)):
        text = repr(value) if not isinstance(value, Path) else repr(str(value))
        return f"input {text[:limit]}{'...' if len(text) > limit else ''}"
    return f"input of type {type(value).__name__}"


def _pop_dtype(options: dict[str, Any], folder: Path) -> Any:
    """The dtype asked in ``options`` (removed from them); ``"auto"`` is the checkpoint's stored dtype."""
    asked = [options.pop(key) for key in _DTYPE_KEYS if key in options]
    if len(asked) > 1 and asked[0] != asked[1]:
        raise ConfigError(f"dtype and torch_dtype disagree: {asked[0]!r} and {asked[1]!r}")
    dtype = asked[0] if asked else None
    return stored_dtype(folder) if dtype == "auto" else dtype


def stored_dtype(folder: Path) -> str | None:
    """The dtype a checkpoint's ``config.json`` records (``dtype`` or ``torch_dtype``), float32 if none; ``None``
    for a folder without one (a LoRA adapter, merged in float32 unless a dtype is given)."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read the config ({error})") from None
    for scope in (config, config.get("text_config") or {}):
        for key in _DTYPE_KEYS:
            if isinstance(scope.get(key), str):
                return scope[key].removeprefix("torch.")
    return "float32"


# ------------------------------------------------------------------------------------------------------- export


def export(
    checkpoint: str | Path,
    folder: str | Path,
    prompts: Mapping[str, str] | None = None,
    default_prompt_name: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write a folder that ``SentenceTransformer(folder, trust_remote_code=True)`` loads as this UNITE checkpoint.

    The folder is a complete unite checkpoint (``UniteEncoder.from_pretrained`` and ``unite encode --model`` read
    it) plus ``modules.json``, ``config_sentence_transformers.json`` and the custom module file.

    Args:
        checkpoint: a checkpoint folder or Hub id, loaded strictly.
        folder: the new folder; it must not exist or be empty.
        prompts: sentence-transformers prompts (name to instruction), added to empty ``query`` and ``document``
            prompts; for Instruct checkpoints, e.g. ``{"query": "Represent the given image with the following
            question:"}``.
        default_prompt_name: the prompt ``encode`` uses when none is given.
        dtype: the weights' dtype in the folder; default: the checkpoint's stored dtype (float32 for an adapter).
        revision: Hub revision of ``checkpoint``.

    Returns:
        The folder.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: exists and is not an empty folder; export writes a new one")
    all_prompts = _check_prompts(prompts, default_prompt_name)
    source = resolve_checkpoint(checkpoint, revision=revision)
    encoder = UniteEncoder.from_pretrained(source, device="cpu", dtype=dtype or stored_dtype(source))
    folder.mkdir(parents=True, exist_ok=True)
    UniteModule.from_encoder(encoder).save(str(folder))
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{Path(ENTRY_FILE).stem}.{ENTRY_CLASS}"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    config = {
        "model_type": "SentenceTransformer",
        "__version__": _versions(),
        "prompts": all_prompts,
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(_ENTRY_TEMPLATE, folder / ENTRY_FILE)
    return folder


def _check_prompts(prompts: Mapping[str, str] | None, default_prompt_name: str | None) -> dict[str, str]:
    merged = dict(DEFAULT_PROMPTS)
    for name, text in (prompts or {}).items():
        if not isinstance(name, str) or not name or not isinstance(text, str):
            raise ConfigError(f"prompts map names to instruction strings, got {name!r}: {text!r}")
        merged[name] = text
    if default_prompt_name is not None and default_prompt_name not in merged:
        raise ConfigError(f"default prompt name {default_prompt_name!r} is not one of {', '.join(merged)}")
    return merged


def _versions() -> dict[str, str]:
    import transformers

    return {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "pytorch": torch.__version__,
    }
