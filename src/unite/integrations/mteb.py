"""A :class:`~unite.UniteEncoder` as an mteb (>= 2) model: ``mteb.evaluate(MtebEncoder(encoder), tasks)``.

mteb hands a model one ``DataLoader`` per side of a task and the task's metadata; each batch is a dict of lists:

- ``text``: a document's title and body joined, a query with mteb's per-query instruction appended;
- ``image``: PIL images (``datasets.Image``), lists of them, or ``{"path", "bytes"}`` records;
- ``video``: torchcodec decoders (``datasets.Video``), frame tensors ``(T, C, H, W)`` from a frame collator,
  paths, or ``{"path", "bytes"}`` records.

Each row becomes one :class:`~unite.Item` (text, images and videos together: a fused input is one item). A
video file (a path, or bytes written to a temporary file) goes through unite's own video pipeline; a decoder is
sampled with unite's frame rule (:func:`unite.data.media.video_frame_count`) and its frames embedded as a frame
list, whose resizing can differ slightly from the file pipeline's.

Instructions come from the task's metadata: a ``prompt`` string instructs the queries, a ``{"query": ...,
"document": ...}`` prompt each side; a task without a prompt gets none (as ``unite eval`` gives none). Fixed
instructions given to :class:`MtebEncoder` win; ``use_task_prompts=False`` turns task prompts off (Base
checkpoints were trained without instructions).
"""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unite.errors import ConfigError, InputError
from unite.models.encoder import DEFAULT_BATCH_SIZE, UniteEncoder
from unite.types import Item

__all__ = ["MtebEncoder", "batch_items", "require_mteb"]

#: Modalities a UNITE checkpoint embeds, as mteb names them.
MODALITIES = ("text", "image", "video")
_QUERY, _DOCUMENT = "query", "document"


def require_mteb() -> Any:
    """Import mteb (>= 2), or fail with the line that installs it.

    Raises:
        ConfigError: mteb is missing or older than 2.
    """
    try:
        import mteb
    except ImportError:
        raise ConfigError("the mteb integration needs mteb >= 2: pip install 'unite-embed[mteb]'") from None
    version = str(getattr(mteb, "__version__", "0"))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 2:
        raise ConfigError(f"the mteb integration needs mteb >= 2, found {version}: pip install 'unite-embed[mteb]'")
    return mteb


class MtebEncoder:
    """mteb's encoder protocol (``encode``, ``similarity``, ``similarity_pairwise``, ``mteb_model_meta``) on UNITE.

    Args:
        model: a loaded encoder, or a checkpoint folder or Hub id to load (as mteb's model loaders pass it).
        revision: the Hub revision to load (and to record).
        device: where to load ``model`` when it is a name.
        use_task_prompts: instruct each side from the task's ``prompt`` (see the module docstring).
        query_instruction, document_instruction: fixed instructions, winning over the task's.
        name: the model name mteb records (default: the Hub id, else ``unite-embed/<folder name>``).

    Example:
        >>> import mteb  # doctest: +SKIP
        >>> model = MtebEncoder("friedrichor/Unite-Instruct-Qwen2-VL-2B")  # doctest: +SKIP
        >>> mteb.evaluate(model, mteb.get_tasks(tasks=["MSRVTTT2V"]), encode_kwargs={"batch_size": 8})  # doctest: +SKIP
    """

    def __init__(
        self,
        model: UniteEncoder | str | Path,
        revision: str | None = None,
        *,
        device: str | None = None,
        use_task_prompts: bool = True,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        require_mteb()
        if not isinstance(model, UniteEncoder):
            model = UniteEncoder.from_pretrained(model, device=device, revision=revision, **kwargs)
        self.encoder = model
        self.revision = revision
        self.use_task_prompts = use_task_prompts
        self.instructions = {_QUERY: query_instruction, _DOCUMENT: document_instruction}
        self._meta = _model_meta(model, name or _model_name(model.name_or_path), revision, use_task_prompts)

    @property
    def mteb_model_meta(self) -> Any:
        """The ``mteb.ModelMeta`` mteb records with the results."""
        return self._meta

    def instruction(self, task_metadata: Any, prompt_type: Any | None) -> str | None:
        """The instruction of one side of a task: the fixed one, else the task's prompt for that side, else none."""
        side = getattr(prompt_type, "value", prompt_type) or _QUERY
        if self.instructions.get(side):
            return self.instructions[side]
        if not self.use_task_prompts:
            return None
        prompt = getattr(task_metadata, "prompt", None)
        if isinstance(prompt, Mapping):
            return prompt.get(side) or None
        if isinstance(prompt, str) and side == _QUERY:
            return prompt or None
        return None

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every row of every batch of ``inputs``.

        Returns:
            (N, D) float32 L2-normalised embeddings in input order.

        Raises:
            InputError: a row holds audio, or nothing UNITE can embed; MediaError: a medium cannot be read.
        """
        instruction = self.instruction(task_metadata, prompt_type)
        batch_size = int(kwargs.get("batch_size") or DEFAULT_BATCH_SIZE)
        parts = []
        with tempfile.TemporaryDirectory(prefix="unite-mteb-") as scratch:
            for batch in inputs:
                items = batch_items(batch, instruction, self.encoder.settings, Path(scratch))
                parts.append(self.encoder.encode(items, batch_size=batch_size, show_progress_bar=False))
        if not parts:
            return np.zeros((0, self.encoder.embedding_dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of every pair: (N1, N2)."""
        from mteb.similarity_functions import cos_sim

        return cos_sim(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of each row with the same row: (N,)."""
        from mteb.similarity_functions import pairwise_cos_sim

        return pairwise_cos_sim(embeddings1, embeddings2)


def _model_name(name_or_path: str | Path) -> str:
    text = str(name_or_path)
    if text.count("/") == 1 and not Path(text).exists():
        return text  # a Hub id
    return f"unite-embed/{Path(text).name or 'checkpoint'}"


def _model_meta(encoder: UniteEncoder, name: str, revision: str | None, use_instructions: bool) -> Any:
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    return ModelMeta.create_empty(
        overwrites={
            "name": name,
            "revision": revision,
            "modalities": list(MODALITIES),
            "embed_dim": encoder.embedding_dim,
            "max_tokens": encoder.settings.max_length,
            "n_parameters": sum(parameter.numel() for parameter in encoder.model.parameters()),
            "similarity_fn_name": ScoringFunction.COSINE,
            "use_instructions": use_instructions,
            "framework": ["PyTorch"],
            "open_weights": True,
        }
    )


# ------------------------------------------------------------------------------------------------ batches


def batch_items(batch: Mapping[str, Any], instruction: str | None, settings: Any, scratch: Path) -> list[Item]:
    """One :class:`~unite.Item` per row of an mteb batch (a dict of equally long lists).

    Args:
        batch: ``text``, ``image`` and ``video`` columns (others, such as ``id`` or ``title``, are not embedded).
        instruction: given to every item.
        settings: the encoder's settings (frame sampling of decoded videos).
        scratch: where video bytes are written for the video pipeline.

    Raises:
        InputError: an ``audio`` column.
    """
    if batch.get("audio") is not None:
        raise InputError("UNITE embeds text, images and videos; this task gives audio")
    columns = [batch.get(name) for name in MODALITIES]
    rows = max((len(column) for column in columns if column is not None), default=0)
    texts, images, videos = (column if column is not None else [None] * rows for column in columns)
    items = []
    for row in range(rows):
        text = texts[row] if isinstance(texts[row], str) and texts[row].strip() else None
        image_sources = [_image(value) for value in _listed(images[row])]
        video_sources = [_video(value, settings, scratch) for value in _listed(videos[row])]
        items.append(Item(text, tuple(image_sources), tuple(video_sources), instruction))
    return items


def _listed(value: Any) -> list[Any]:
    """A cell as a list of media: none, one, or several (a list of images; a video is never a list here)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _image(value: Any) -> Any:
    """An image source unite reads: a PIL image, a path, or a uint8 array (H, W, C)."""
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            from PIL import Image

            return Image.open(io.BytesIO(value["bytes"]))
        return str(value["path"])
    if isinstance(value, torch.Tensor):
        return _frames_last(value.unsqueeze(0))[0]
    return value


def _video(value: Any, settings: Any, scratch: Path) -> Any:
    """A video source unite reads: a path, or a uint8 frame array (T, H, W, C)."""
    if isinstance(value, Mapping):
        path = value.get("path")
        if value.get("bytes") is None:
            return str(path)
        written = scratch / f"{uuid.uuid4().hex}{Path(str(path or '')).suffix or '.mp4'}"
        written.write_bytes(value["bytes"])
        return str(written)
    if hasattr(value, "get_frames_at") and hasattr(value, "metadata"):
        return _decoded(value, settings)
    if isinstance(value, (torch.Tensor, np.ndarray)) and np.ndim(value) == 4:
        return _frames_last(value)
    return value


def _decoded(decoder: Any, settings: Any) -> np.ndarray:
    """Frames of a torchcodec decoder, sampled as unite samples a video file of the same length and rate."""
    from unite.data.media import VideoInfo, sample_indices, video_frame_count

    metadata = decoder.metadata
    total = int(metadata.num_frames)
    fps = getattr(metadata, "average_fps", None) or total / max(float(metadata.duration_seconds or 1.0), 1e-6)
    info = VideoInfo(total, float(fps), int(metadata.height), int(metadata.width))
    frames = decoder.get_frames_at(sample_indices(total, video_frame_count(info, settings))).data
    return _frames_last(frames)


def _frames_last(frames: Any) -> np.ndarray:
    """uint8 frames (T, H, W, 3) from (T, C, H, W) or (T, H, W, C) tensors or arrays."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(array * 255 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)
