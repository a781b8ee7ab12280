"""UniteEncoder: items in, L2-normalised embeddings out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from unite.data.collator import Features, ItemProcessor
from unite.errors import CheckpointError, ConfigError, InputError, UniteError
from unite.models.loading import load_weights, resolve_checkpoint, resolve_device, resolve_dtype, weights_fingerprint
from unite.models.modeling import UniteQwen2VL
from unite.settings import EncodingSettings
from unite.types import Item, to_item

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MAX_TOKENS_PER_BATCH", "EncodeResult", "UniteEncoder", "as_item_error"]

SETTINGS_FILE = "unite_config.json"
DEFAULT_BATCH_SIZE = 32
#: Padded tokens (text plus visual) in one batch: length of the longest item times the batch's item count.
DEFAULT_MAX_TOKENS_PER_BATCH = 16384
#: Threads that decode media and tokenize while the model runs.
DEFAULT_NUM_WORKERS = 2
_ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass
class EncodeResult:
    """Embeddings of every item in input order, with the items that failed.

    Attributes:
        embeddings: (N, D) float32; the rows of failed items are zero.
        ok: (N,) bool, False where an item failed.
        errors: (index, message) for every failed item, in input order.
    """

    embeddings: np.ndarray | torch.Tensor
    ok: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)


class UniteEncoder:
    """A UNITE checkpoint ready to embed text, images, videos and their mixtures.

    Args:
        model: the network.
        tokenizer: its tokenizer.
        settings: encoding settings (pixel bounds, video sampling, positions, limits).
        name_or_path: where it came from, for records.

    Example:
        >>> encoder = UniteEncoder.from_pretrained("friedrichor/Unite-Base-Qwen2-VL-2B")  # doctest: +SKIP
        >>> vectors = encoder.encode(["a cat", {"image": "cat.jpg"}])  # doctest: +SKIP
    """

    def __init__(
        self, model: UniteQwen2VL, tokenizer: Any, settings: EncodingSettings | None = None, name_or_path: str = ""
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings or EncodingSettings()
        self.model.position_scheme = self.settings.position_scheme
        self.processor = ItemProcessor(tokenizer, self.settings)
        self.name_or_path = name_or_path

    # ------------------------------------------------------------------------------------------ loading, saving

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        attn_implementation: str = "sdpa",
        settings: EncodingSettings | None = None,
        token: str | None = None,
        local_files_only: bool = False,
        **setting_overrides: Any,
    ) -> UniteEncoder:
        """Load a UNITE checkpoint from a folder or the Hugging Face Hub, strictly.

        Args:
            name_or_path: a local folder (either weight layout) or a Hub id such as
                ``friedrichor/Unite-Base-Qwen2-VL-2B``.
            device: cuda when available, else mps, else cpu.
            dtype: bfloat16 on a GPU, float32 on the CPU.
            revision: Hub revision (branch, tag or commit).
            attn_implementation: ``sdpa`` (default), ``flash_attention_2`` (needs flash-attn) or ``eager``.
            settings: encoding settings; default: those recorded in the folder, else the released defaults.
            token: Hub token for private repositories.
            local_files_only: never reach the Hub.
            **setting_overrides: fields of :class:`EncodingSettings` to change, e.g. ``video_frames=16``.

        Raises:
            CheckpointError: the folder cannot be read or its tensors do not match the model exactly.
        """
        from transformers import AutoTokenizer, Qwen2VLConfig
        from transformers.initialization import no_init_weights

        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        attention = _attention(attn_implementation)
        folder = resolve_checkpoint(name_or_path, revision=revision, token=token, local_files_only=local_files_only)
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            return cls._from_adapter(
                folder,
                device=target,
                dtype=torch_dtype,
                attn_implementation=attention,
                settings=settings,
                **setting_overrides,
            )
        if settings is None:
            settings = _read_settings(folder)
        settings = settings.replace(**setting_overrides)
        try:
            config = Qwen2VLConfig.from_pretrained(folder)
        except Exception as error:  # transformers raises OSError, ValueError or its own strict-config errors
            raise CheckpointError(f"{folder / 'config.json'}: cannot read the config ({error})") from None
        if config.model_type != "qwen2_vl":
            raise CheckpointError(f"{folder / 'config.json'}: model_type is {config.model_type!r}, expected 'qwen2_vl'")
        config._attn_implementation = attention
        local = Path(name_or_path).expanduser()
        config._name_or_path = str(local.resolve()) if local.is_dir() else str(name_or_path)  # recorded by adapters
        with no_init_weights():
            model = UniteQwen2VL._from_config(config, dtype=torch_dtype)
        load_weights(model, folder)
        model.to(target)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as error:  # tokenizer loading raises OSError, ValueError, or library-specific errors
            raise CheckpointError(f"{folder}: cannot load the tokenizer ({error})") from None
        encoder = cls(model, tokenizer, settings, name_or_path=config._name_or_path)
        encoder.weights_fingerprint = weights_fingerprint(folder)  # what an index records of these weights
        return encoder

    @classmethod
    def _from_adapter(cls, folder: Path, settings: EncodingSettings | None = None, **kwargs: Any) -> UniteEncoder:
        """A LoRA adapter folder: load the base it records, strictly, and merge the adapter into it."""
        try:
            from peft import PeftModel
        except ImportError:
            raise CheckpointError(
                f"{folder} holds a LoRA adapter; loading it needs peft: pip install 'unite-embed[train]'"
            ) from None
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise CheckpointError(f"{folder / 'adapter_config.json'}: no base_model_name_or_path recorded")
        encoder = cls.from_pretrained(base, settings=settings, **kwargs)
        try:
            merged = PeftModel.from_pretrained(encoder.model, str(folder)).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{folder}: cannot apply the LoRA adapter to {base} ({error})") from None
        adapted = cls(merged, encoder.tokenizer, encoder.settings, name_or_path=str(folder))
        adapted.weights_fingerprint = weights_fingerprint(folder, base_fingerprint=encoder.weights_fingerprint)
        return adapted

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write weights, tokenizer and encoding settings; the folder loads back to identical embeddings."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.architectures = ["UniteQwen2VL"]
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.settings.save(folder / SETTINGS_FILE)
        return folder

    # ------------------------------------------------------------------------------------------------- encoding

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def encode(
        self,
        items: Iterable[Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        show_progress_bar: bool | None = None,
        convert_to: Literal["numpy", "torch"] = "numpy",
        instruction: str | None = None,
        max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
        num_workers: int = DEFAULT_NUM_WORKERS,
    ) -> np.ndarray | torch.Tensor:
        """Embed items: strings, dicts ``{"text", "image", "video"}``, PIL images or :class:`Item` objects.

        Items are sorted by length and batched by a token budget (at most ``batch_size`` items and
        ``max_tokens_per_batch`` padded tokens per batch); their media are decoded in ``num_workers``
        background threads while the model runs. The result keeps the input order and does not depend on
        the batching beyond float noise.

        Returns:
            (N, D) float32 L2-normalised embeddings, a numpy array or a CPU tensor.

        Raises:
            UniteError: the first bad item, naming its index and the reason.
        """
        result = self.encode_with_errors(
            items,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to=convert_to,
            instruction=instruction,
            max_tokens_per_batch=max_tokens_per_batch,
            num_workers=num_workers,
            on_error="raise",
        )
        return result.embeddings

    def encode_query(self, items: Iterable[Any], instruction: str | None = None, **kwargs: Any) -> Any:
        """Embed queries, with a task instruction for Instruct checkpoints."""
        return self.encode(items, instruction=instruction, **kwargs)

    def encode_document(self, items: Iterable[Any], instruction: str | None = None, **kwargs: Any) -> Any:
        """Embed documents (candidates), with an optional instruction."""
        return self.encode(items, instruction=instruction, **kwargs)

    def encode_with_errors(
        self,
        items: Iterable[Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        show_progress_bar: bool | None = None,
        convert_to: Literal["numpy", "torch"] = "numpy",
        instruction: str | None = None,
        max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
        num_workers: int = DEFAULT_NUM_WORKERS,
        on_error: Literal["raise", "skip"] = "skip",
        base_dir: str | Path | None = None,
    ) -> EncodeResult:
        """Like :meth:`encode`, but with ``on_error="skip"`` a bad item is recorded and its row left zero.

        Each raw item that is not an :class:`Item` is parsed here; ``base_dir`` resolves relative media paths.
        Any exception raised while parsing, measuring, decoding or tokenizing one item is that item's error
        (an unexpected one as ``internal error while preparing the item: TYPE: message``). A batch that fails
        inside the model (out of memory, ...) is retried item by item, so one item cannot take others down;
        an item that still fails gets its own error. With ``on_error="raise"`` the first error is raised as an
        :class:`InputError` or :class:`MediaError` with ``item_index`` and ``reason`` attributes.
        """
        if batch_size < 1 or max_tokens_per_batch < 1 or num_workers < 1:
            raise ConfigError("batch_size, max_tokens_per_batch and num_workers must be at least 1")
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        raw = list(items)
        run = _Run(len(raw), self.embedding_dim, on_error)
        with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="unite-media") as pool:
            parsed = {i: run.guard(i, _parse, value, base_dir, instruction) for i, value in enumerate(raw)}
            parsed = {i: item for i, item in parsed.items() if item is not None}
            lengths = dict(
                zip(parsed, pool.map(lambda i: run.guard(i, self.processor.estimate_length, parsed[i]), parsed))
            )
            run.check()
            order = sorted((i for i in parsed if lengths[i] is not None), key=lambda i: -lengths[i])
            batches = list(_token_batches(order, lengths, batch_size, max_tokens_per_batch))
            show = show_progress_bar if show_progress_bar is not None else len(batches) > 1
            with tqdm(total=len(raw), disable=not show, desc="Encoding", unit="item") as bar:
                bar.update(len(raw) - len(order))
                for batch, futures in _prefetch(pool, batches, parsed, self.processor.prepare, lookahead=2):
                    features = run.collect(batch, futures)
                    run.check()
                    run.embed(features, self._embed)
                    run.check()
                    bar.update(len(batch))
        embeddings = run.embeddings if convert_to == "numpy" else torch.from_numpy(run.embeddings)
        return EncodeResult(embeddings, run.ok, sorted(run.errors))

    def embed_prepared(
        self,
        features: Sequence[Features],
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    ) -> EncodeResult:
        """Embed features prepared elsewhere (:meth:`ItemProcessor.prepare` in another process or machine).

        The features are sorted by token count and batched by the same token budget as :meth:`encode_with_errors`
        (at most ``batch_size`` items and ``max_tokens_per_batch`` padded tokens per batch); a batch that fails
        inside the model is retried item by item, and an item that still fails gets its own error
        (``the model failed on this item alone: ...``). Never raises for an item.

        Returns:
            :class:`EncodeResult` over ``features`` in their order: (N, D) float32 rows, zero where failed.
        """
        if batch_size < 1 or max_tokens_per_batch < 1:
            raise ConfigError("batch_size and max_tokens_per_batch must be at least 1")
        run = _Run(len(features), self.embedding_dim, "skip")
        lengths = {index: len(feature.input_ids) for index, feature in enumerate(features)}
        order = sorted(lengths, key=lambda index: -lengths[index])
        for batch in _token_batches(order, lengths, batch_size, max_tokens_per_batch):
            run.embed([(index, features[index]) for index in batch], self._embed)
        return EncodeResult(run.embeddings, run.ok, sorted(run.errors))

    @torch.inference_mode()
    def _embed(self, features: list[Features]) -> np.ndarray:
        batch = self.processor.collate(features)
        batch = {key: value.to(self.device) for key, value in batch.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in batch:
                batch[key] = batch[key].to(self.dtype)
        return self.model(**batch).cpu().numpy()


class _Run:
    """Bookkeeping of one encode call: rows, failures and the error policy."""

    def __init__(self, total: int, dim: int, on_error: str) -> None:
        self.embeddings = np.zeros((total, dim), dtype=np.float32)
        self.ok = np.zeros(total, dtype=bool)
        self.failures: list[tuple[int, UniteError]] = []  # unexpected exceptions arrive wrapped as InputError
        self.on_error = on_error

    @property
    def errors(self) -> list[tuple[int, str]]:
        return [(index, str(error)) for index, error in self.failures]

    def guard(self, index: int, function: Any, *args: Any) -> Any:
        """``function(*args)``, or ``None`` with the exception recorded as item ``index``'s failure."""
        try:
            return function(*args)
        except Exception as error:  # any exception of one item is that item's error, never the run's
            self.fail(index, error, _PREPARE_FAILURE)
            return None

    def fail(self, index: int, error: Exception, context: str) -> None:
        """Record ``error`` for item ``index``; an unexpected exception becomes an InputError naming its type."""
        self.failures.append((index, as_item_error(error, context)))

    def check(self) -> None:
        """Under ``on_error="raise"``, raise the first failure, of its own type, naming the item."""
        if self.on_error == "raise" and self.failures:
            index, error = min(self.failures, key=lambda failure: failure[0])
            raised = type(error)(f"item {index}: {error}")
            raised.item_index = index  # type: ignore[attr-defined]
            raised.reason = str(error)  # type: ignore[attr-defined]
            raise raised from error

    def collect(self, batch: list[int], futures: list[Future]) -> list[tuple[int, Features]]:
        out = []
        for index, future in zip(batch, futures):
            try:
                out.append((index, future.result()))
            except Exception as error:  # raised by the worker while decoding or tokenizing this item
                self.fail(index, error, _PREPARE_FAILURE)
        return out

    def embed(self, features: list[tuple[int, Features]], embed: Any) -> None:
        """Run the model on a batch; if it fails, on each item alone, recording the items that still fail."""
        if not features:
            return
        try:
            self.store([index for index, _ in features], embed([feature for _, feature in features]))
            return
        except Exception as error:  # out of memory, a kernel refusing a shape, ...: retried one by one
            if len(features) == 1:
                self.fail(features[0][0], error, _MODEL_FAILURE)
                return
            logger.warning("a batch of %d items failed in the model (%s); retrying one by one", len(features), error)
        _release_cached_memory()
        for index, feature in features:
            try:
                self.store([index], embed([feature]))
            except Exception as error:
                self.fail(index, error, _MODEL_FAILURE)

    def store(self, indices: list[int], vectors: np.ndarray) -> None:
        self.embeddings[indices] = vectors
        self.ok[indices] = True


_PREPARE_FAILURE = "internal error while preparing the item"
_MODEL_FAILURE = "the model failed on this item alone"


def as_item_error(error: Exception, context: str = _PREPARE_FAILURE) -> UniteError:
    """One item's exception as that item's error: a :class:`UniteError` as it is, any other wrapped in an
    :class:`InputError` ``CONTEXT: TYPE: message`` (``internal error while preparing the item: TypeError: ...``)."""
    if isinstance(error, UniteError):
        return error
    return InputError(f"{context}: {type(error).__name__}: {error}")


def _release_cached_memory() -> None:
    """Give cached accelerator memory back before retrying a batch item by item (a no-op on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _parse(raw: Any, base_dir: str | Path | None, instruction: str | None) -> Item:
    return to_item(raw, base_dir).with_instruction(instruction)


def _token_batches(
    order: Sequence[int], lengths: dict[int, int], batch_size: int, max_tokens: int
) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` (longest first) within ``batch_size`` items and ``max_tokens`` padded tokens."""
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) + 1 > batch_size or (len(batch) + 1) * lengths[batch[0]] > max_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _prefetch(
    pool: ThreadPoolExecutor, batches: list[list[int]], items: dict[int, Item], prepare: Any, lookahead: int
) -> Iterator[tuple[list[int], list[Future]]]:
    """Yield each batch with futures of its prepared features, keeping ``lookahead`` batches in flight."""
    queue: list[tuple[list[int], list[Future]]] = []
    upcoming = iter(batches)
    for batch in upcoming:
        queue.append((batch, [pool.submit(prepare, items[i]) for i in batch]))
        if len(queue) > lookahead:
            yield queue.pop(0)
    while queue:
        yield queue.pop(0)


def _attention(name: str) -> str:
    if name not in _ATTENTION:
        raise ConfigError(f"attn_implementation must be one of {', '.join(_ATTENTION)}, got {name!r}")
    if name == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise ConfigError("flash_attention_2 needs the flash-attn package: pip install flash-attn") from None
    return name


def _read_settings(folder: Path) -> EncodingSettings:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return EncodingSettings()
    try:
        return EncodingSettings.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"{path}: cannot read encoding settings ({error})") from None
