"""UniteEncoder: items in, L2-normalised embeddings out."""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from unite.data.collator import Features, ItemProcessor
from unite.data.workers import PreparationWorkers, PrepareIn, available_cores, in_memory
from unite.errors import CheckpointError, ConfigError, InputError, UniteError
from unite.models.loading import load_weights, resolve_checkpoint, resolve_device, resolve_dtype, weights_fingerprint
from unite.models.modeling import UniteQwen2VL, activation_bytes_per_token, token_budget_from_memory
from unite.settings import EncodingSettings
from unite.types import Item, to_item

logger = logging.getLogger(__name__)

__all__ = [
    "CPU_MAX_TOKENS_PER_BATCH",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_TOKENS_PER_BATCH",
    "EncodeResult",
    "UniteEncoder",
    "as_item_error",
]

SETTINGS_FILE = "unite_config.json"
DEFAULT_BATCH_SIZE = 32
#: Tokens (text plus visual) in one batch on an accelerator: the items' own when packed, the longest item's times
#: the item count when padded.
DEFAULT_MAX_TOKENS_PER_BATCH = 16384
#: The same on the CPU, where a larger batch computes no faster (the vision tower runs image by image, a packed
#: batch costs its tokens) but makes the model wait longer for its first batch and run its last one alone.
CPU_MAX_TOKENS_PER_BATCH = 4096
#: Workers (processes or threads) that decode media and tokenize while the model runs: ``None`` is one per core
#: available (``len(os.sched_getaffinity(0))``).
DEFAULT_NUM_WORKERS: int | None = None
#: Where items with media files are prepared by default (:class:`unite.data.workers.PrepareIn`).
DEFAULT_PREPARE_IN = PrepareIn.AUTO
#: Batches being prepared ahead of the one the model runs: bounds the memory held in pixels. At least two items
#: per worker are kept in flight, so that small batches do not leave workers idle.
PREFETCH_BATCHES = 2
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
        packing: run each batch as one packed sequence without padding (the default); ``False`` pads the
            batch instead. The embeddings agree either way beyond float noise (docs/encoding.md, Packing).

    Example:
        >>> encoder = UniteEncoder.from_pretrained("friedrichor/Unite-Base-Qwen2-VL-2B")  # doctest: +SKIP
        >>> vectors = encoder.encode(["a cat", {"image": "cat.jpg"}])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: UniteQwen2VL,
        tokenizer: Any,
        settings: EncodingSettings | None = None,
        name_or_path: str = "",
        packing: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings or EncodingSettings()
        self.model.position_scheme = self.settings.position_scheme
        self.processor = ItemProcessor(tokenizer, self.settings)
        self.name_or_path = name_or_path
        self.packing = packing

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
        packing: bool = True,
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
            packing: embed each batch as one packed sequence (default) rather than a padded batch.
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
            adapted = cls._from_adapter(
                folder,
                device=target,
                dtype=torch_dtype,
                attn_implementation=attention,
                settings=settings,
                **setting_overrides,
            )
            adapted.packing = packing
            return adapted
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
        encoder = cls(model, tokenizer, settings, name_or_path=config._name_or_path, packing=packing)
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
        max_tokens_per_batch: int | None = None,
        num_workers: int | None = DEFAULT_NUM_WORKERS,
        prepare_in: PrepareIn | str = DEFAULT_PREPARE_IN,
    ) -> np.ndarray | torch.Tensor:
        """Embed items: strings, dicts ``{"text", "image", "video"}``, PIL images or :class:`Item` objects.

        Items are sorted by length and batched by a token budget (at most ``batch_size`` items and
        ``max_tokens_per_batch`` tokens per batch, counted as :meth:`token_budget` says; default 16384 on a GPU,
        4096 on the CPU). While the model runs, the next batches are prepared (media decoded, pixels made, prompts
        tokenized) by ``num_workers`` workers (default: one per core available): with ``prepare_in="processes"``
        items with media files go to worker processes, started on first use and kept until :meth:`close`; texts and
        media given as objects (PIL images, arrays) are prepared in threads, as every item is with
        ``prepare_in="threads"``. ``"auto"`` (the default) is threads on up to two cores, processes above. Both give
        the same pixels, bit for bit. On the CPU the model's intra-op threads (``torch.get_num_threads()``) are
        lowered while items are still being prepared, by one per item in preparation (at least one thread left), so
        the model and the workers do not fight for the cores; the count is restored after. The result keeps the
        input order and does not depend on the batching beyond float noise.

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
            prepare_in=prepare_in,
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
        max_tokens_per_batch: int | None = None,
        num_workers: int | None = DEFAULT_NUM_WORKERS,
        prepare_in: PrepareIn | str = DEFAULT_PREPARE_IN,
        on_error: Literal["raise", "skip"] = "skip",
        base_dir: str | Path | None = None,
    ) -> EncodeResult:
        """Like :meth:`encode`, but with ``on_error="skip"`` a bad item is recorded and its row left zero.

        Each raw item that is not an :class:`Item` is parsed here; ``base_dir`` resolves relative media paths.
        Any exception raised while parsing, measuring, decoding or tokenizing one item is that item's error
        (an unexpected one as ``internal error while preparing the item: TYPE: message``). A batch that fails
        inside the model (out of memory, ...) is retried item by item, so one item cannot take others down;
        an item that still fails gets its own error. With ``on_error="raise"`` the first error is raised as an
        :class:`InputError` or :class:`MediaError` with ``item_index`` and ``reason`` attributes. An item whose
        worker process dies fails with ``the worker process preparing this item died (exit code N)``.
        """
        workers = available_cores() if num_workers is None else num_workers
        if batch_size < 1 or (max_tokens_per_batch is not None and max_tokens_per_batch < 1) or workers < 1:
            raise ConfigError("batch_size, max_tokens_per_batch and num_workers must be at least 1")
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        where = _prepare_in(prepare_in).resolve()
        raw = list(items)
        run = _Run(len(raw), self.embedding_dim, on_error)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unite-media") as pool:
            parsed = {i: run.guard(i, _parse, value, base_dir, instruction) for i, value in enumerate(raw)}
            parsed = {i: item for i, item in parsed.items() if item is not None}
            lengths = dict(
                zip(parsed, pool.map(lambda i: run.guard(i, self.processor.estimate_length, parsed[i]), parsed))
            )
            run.check()
            order = sorted((i for i in parsed if lengths[i] is not None), key=lambda i: -lengths[i])
            budget = self.token_budget(max_tokens_per_batch)
            batches = list(_token_batches(order, lengths, batch_size, budget, self._packs))
            submit = self._submitter(pool, workers, where, [parsed[i] for i in order])
            show = show_progress_bar if show_progress_bar is not None else len(batches) > 1
            threads = _ModelThreads(self.device, workers)
            with tqdm(total=len(raw), disable=not show, desc="Encoding", unit="item") as bar, threads:
                bar.update(len(raw) - len(order))
                prefetch = _prefetch(submit, batches, parsed, PREFETCH_BATCHES, min_items=2 * workers)
                with closing(prefetch) as prepared:
                    for batch, futures, ahead in prepared:
                        features = run.collect(batch, futures)
                        run.check()
                        threads.share(ahead)
                        run.embed(features, self._embed)
                        run.check()
                        bar.update(len(batch))
        embeddings = run.embeddings if convert_to == "numpy" else torch.from_numpy(run.embeddings)
        return EncodeResult(embeddings, run.ok, sorted(run.errors))

    def close(self) -> None:
        """Stop the preparation worker processes, if any were started (a later encode starts them again)."""
        with _WORKERS_LOCK:
            workers, self._preparation_workers = getattr(self, "_preparation_workers", None), None
        if workers is not None:
            workers.close()

    def __del__(self) -> None:
        workers = self.__dict__.get("_preparation_workers")  # no lock: the module may be half torn down
        if workers is not None:
            workers.close()

    def _submitter(
        self, pool: ThreadPoolExecutor, count: int, where: PrepareIn, items: list[Item]
    ) -> Callable[[Item], Future]:
        """How each item is prepared: in this process's threads, or by the worker processes for items with media
        files. The processes are started here on first use, restarted when more are asked for or the settings
        changed, and reused as they are when fewer are asked for (a call of one item at a time does not restart
        them). Processes that cannot start leave the items to threads, with a warning."""
        nested = multiprocessing.parent_process() is not None  # in a worker process: no processes of its own
        if where is PrepareIn.THREADS or nested or all(in_memory(item) for item in items):
            return partial(pool.submit, self.processor.prepare)
        with _WORKERS_LOCK:
            workers = getattr(self, "_preparation_workers", None)
            if workers is not None and (workers.count < count or workers.settings != self.processor.settings):
                workers.close()
                workers = None
            if workers is None:
                workers = PreparationWorkers(
                    self.processor.tokenizer, self.processor.settings, count, fallback=self.processor.prepare
                )
                self._preparation_workers = workers

        def submit(item: Item) -> Future:
            if not in_memory(item):
                try:
                    return workers.submit(item)
                except UniteError:  # closed meanwhile by another call or close(): prepared here instead
                    pass
            return pool.submit(self.processor.prepare, item)

        return submit

    def embed_prepared(
        self,
        features: Sequence[Features],
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens_per_batch: int | None = None,
    ) -> EncodeResult:
        """Embed features prepared elsewhere (:meth:`ItemProcessor.prepare` in another process or machine).

        The features are sorted by token count and batched by the same token budget as :meth:`encode_with_errors` (at
        most ``batch_size`` items and ``max_tokens_per_batch`` tokens per batch, counted as :meth:`token_budget` says);
        a batch that fails inside the model is retried item by item, and an item that still fails gets its own error
        (``the model failed on this item alone: ...``). Never raises for an item.

        Returns:
            :class:`EncodeResult` over ``features`` in their order: (N, D) float32 rows, zero where failed.
        """
        if batch_size < 1 or (max_tokens_per_batch is not None and max_tokens_per_batch < 1):
            raise ConfigError("batch_size and max_tokens_per_batch must be at least 1")
        run = _Run(len(features), self.embedding_dim, "skip")
        lengths = {index: len(feature.input_ids) for index, feature in enumerate(features)}
        order = sorted(lengths, key=lambda index: -lengths[index])
        budget = self.token_budget(max_tokens_per_batch)
        for batch in _token_batches(order, lengths, batch_size, budget, self._packs):
            run.embed([(index, features[index]) for index in batch], self._embed)
        return EncodeResult(run.embeddings, run.ok, sorted(run.errors))

    def token_budget(self, max_tokens_per_batch: int | None = None) -> int:
        """Tokens one batch may hold: ``max_tokens_per_batch`` (default :data:`DEFAULT_MAX_TOKENS_PER_BATCH` on an
        accelerator, :data:`CPU_MAX_TOKENS_PER_BATCH` on the CPU), and on CUDA no more than the activations of the
        memory free now allow (:func:`unite.models.modeling.token_budget_from_memory`, measured once, after
        loading). Packed batches count their items' tokens, padded ones the longest item times the items."""
        if max_tokens_per_batch is None:
            cpu = self.device.type == "cpu"
            max_tokens_per_batch = CPU_MAX_TOKENS_PER_BATCH if cpu else DEFAULT_MAX_TOKENS_PER_BATCH
        if self.device.type != "cuda":
            return max_tokens_per_batch
        if getattr(self, "_memory_budget", None) is None:
            per_token = activation_bytes_per_token(self.model.config, self.dtype)
            self._memory_budget = token_budget_from_memory(per_token, self.device)
        return min(max_tokens_per_batch, self._memory_budget or max_tokens_per_batch)

    @property
    def _packs(self) -> bool:
        return bool(self.packing and self.model.supports_packing)

    @torch.inference_mode()
    def _embed(self, features: list[Features]) -> np.ndarray:
        """(B, D) float32 embeddings of one batch: packed (or padded), moved to the device, run."""
        if self._packs:
            batch = self.processor.collate_packed(features)
        else:
            batch = self.processor.collate(features)
        return self.model(**_to_device(batch, self.device, self.dtype)).cpu().numpy()


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
#: Guards the start and the end of an encoder's preparation workers.
_WORKERS_LOCK = threading.Lock()
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
    order: Sequence[int], lengths: dict[int, int], batch_size: int, max_tokens: int, packed: bool = False
) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` (longest first) within ``batch_size`` items and ``max_tokens`` tokens: the
    items' tokens when the batch is packed, the longest item's times the item count when it is padded."""
    batch: list[int] = []
    tokens = 0
    for index in order:
        cost = tokens + lengths[index] if packed else (len(batch) + 1) * lengths[batch[0] if batch else index]
        if batch and (len(batch) + 1 > batch_size or cost > max_tokens):
            yield batch
            batch, tokens = [], 0
        batch.append(index)
        tokens += lengths[index]
    if batch:
        yield batch


def _prefetch(
    submit: Callable[[Item], Future],
    batches: list[list[int]],
    items: dict[int, Item],
    lookahead: int,
    min_items: int = 0,
) -> Iterator[tuple[list[int], list[Future], list[Future]]]:
    """Yield each batch with futures of its prepared features and the futures of the batches submitted after
    it, keeping ``lookahead`` batches and at least ``min_items`` items in flight besides the one yielded; the
    futures of batches not yet yielded are cancelled when the caller stops early."""
    queue: deque[tuple[list[int], list[Future]]] = deque()
    pending = iter(batches)
    try:
        while True:
            while len(queue) <= lookahead or sum(len(batch) for batch, _ in list(queue)[1:]) < min_items:
                batch = next(pending, None)
                if batch is None:
                    break
                queue.append((batch, [submit(items[i]) for i in batch]))
            if not queue:
                return
            batch, futures = queue.popleft()
            yield batch, futures, [future for _, later in queue for future in later]
    finally:
        for _, futures in queue:
            for future in futures:
                future.cancel()


class _ModelThreads:
    """The model's share of the CPU while workers prepare the next items, for one encode call on the CPU.

    Before each batch, :meth:`share` sets the calling thread's intra-op thread count (``torch.set_num_threads``)
    to the count found on entry minus the items still being prepared (at most ``workers`` of them run at once),
    and at least one: the preparation workers and the model's threads would otherwise number more than the
    cores, and torch's threads spin at each barrier waiting for one of theirs that the OS has swapped out for a
    worker. When nothing is left to prepare the model gets every thread back. The count found on entry is
    restored on exit. On an accelerator the model does not use these threads: nothing changes.
    """

    def __init__(self, device: torch.device, workers: int) -> None:
        self.active = device.type == "cpu"
        self.workers = workers
        self.base = 0

    def __enter__(self) -> _ModelThreads:
        if self.active:
            self.base = torch.get_num_threads()
        return self

    def share(self, ahead: list[Future]) -> None:
        if not self.active:
            return
        preparing = min(self.workers, sum(1 for future in ahead if not future.done()))
        wanted = max(1, self.base - preparing)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def __exit__(self, *exc_info: object) -> None:
        if self.active and torch.get_num_threads() != self.base:
            torch.set_num_threads(self.base)


def _prepare_in(value: PrepareIn | str) -> PrepareIn:
    try:
        return PrepareIn(value)
    except ValueError:
        choices = ", ".join(repr(choice.value) for choice in PrepareIn)
        raise ConfigError(f"prepare_in must be one of {choices}, got {value!r}") from None


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


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The batch on ``device``, pixel values in the model's ``dtype``.

    On CUDA the host tensors are pinned and copied with ``non_blocking=True``, so the copies are queued behind the
    running work instead of stalling the host; pixels travel as float32 and are cast on the device (the cast runs
    there, not on the CPU). Dropping a pinned tensor while its copy is in flight is safe: PyTorch's caching host
    allocator records the copy's event and reuses the block only after it completes.
    """
    cuda = device.type == "cuda"
    moved = {}
    for key, value in batch.items():
        if cuda:
            value = value.pin_memory().to(device, non_blocking=True)
        else:
            value = value.to(device)
        moved[key] = value.to(dtype) if key in _PIXEL_KEYS else value
    return moved


_PIXEL_KEYS = ("pixel_values", "pixel_values_videos")
