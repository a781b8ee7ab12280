"""The one interface every bulk engine implements (``--engine local`` here, ``--engine ray`` beside it).

:func:`unite.bulk.run.run_bulk` does everything that is not per-row work: it expands and scans the sources,
plans the shards, checks the output folder's manifest (the refusal to mix, the complete shards), writes shards
and the manifest, and shows progress. An engine only turns shards into rows::

    engine = make_engine(job)               # loads what it needs; sets engine.model
    engine.model                            # ModelInfo: name, fingerprint, settings, dim, tokenizer folder
    stats = engine.run(shards, on_shard_done, progress)
    engine.close()

The contract of :meth:`Engine.run`:

- ``shards``: the :class:`~unite.bulk.plan.ShardSpec` objects still to make, in plan order (complete ones are
  already left out). A spec is picklable and self-contained: :func:`unite.bulk.sources.read_rows(spec)` reads its
  records anywhere the source path (as given, relative to the driver's working folder) can be opened.
- Per row: :func:`unite.bulk.stages.prepare_rows` (CPU: media, pixels, tokens; no model) and then
  :func:`unite.bulk.stages.embed_rows` (the model), which give each row what ``encode_with_errors`` gives it in
  one process (per-item isolation, a model failure on a batch retried one by one, errors ``FILE:LINE:
  reason``). The tokenizer folder and settings of :attr:`Engine.model` are what ``prepare_rows`` needs.
- For each shard, once all its rows are done: ``on_shard_done(spec, rows)`` with a
  :class:`~unite.bulk.shards.ShardRows` of exactly ``spec.rows`` rows in line order, called from the thread
  that called ``run``, one call at a time, in any shard order. It writes the shard and the manifest. It raises
  under ``--on-error raise`` when the shard holds a failed row (the first one's error), or when a write fails:
  the engine then stops its workers and lets the exception propagate.
- ``progress(n)``: n more rows are done (call it from the thread that called ``run``).
- ``job.on_error == "raise"``: the run must stop at the first bad row and raise its error (a
  :class:`~unite.errors.UniteError` whose message is ``FILE:LINE: reason``). Passing every finished shard to
  ``on_shard_done`` satisfies this; the local engine also stops submitting work at the first failure and
  raises the failure of the lowest (shard, line) once the rows before it are done.
- Killing the driver or a worker loses at most the shards not yet passed to ``on_shard_done``.
- Returns :class:`EngineStats`: rows done and failed in this call, seconds, and what each worker did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from unite.bulk.plan import ShardSpec
from unite.bulk.shards import ShardRows
from unite.errors import ConfigError
from unite.models.encoder import DEFAULT_BATCH_SIZE
from unite.settings import EncodingSettings

if TYPE_CHECKING:
    from unite.models.encoder import UniteEncoder

__all__ = [
    "ENGINES",
    "BulkJob",
    "Engine",
    "EngineStats",
    "ModelInfo",
    "OnShardDone",
    "Progress",
    "WorkerStats",
    "make_engine",
]

#: Engine names ``--engine`` accepts.
ENGINES = ("local", "ray")

OnShardDone = Callable[[ShardSpec, ShardRows], None]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BulkJob:
    """Everything an engine needs to know about the run, as the command line gave it. Picklable.

    Attributes:
        model: checkpoint folder or Hugging Face id, as given.
        revision, device, dtype, attn_implementation, packing: how to load it (see
            ``UniteEncoder.from_pretrained``).
        setting_overrides: :class:`~unite.settings.EncodingSettings` fields to change from the checkpoint's own.
        instruction: task instruction given to every item.
        batch_size, max_tokens_per_batch: the model's token-budget batching.
        on_error: ``raise`` (stop at the first bad row) or ``skip`` (bad rows are rows with ok false).
        workers: preparation workers (local: processes; default: the cores available).
        gpus_per_worker: GPUs per model replica (local: 0 for the CPU, or a fraction up to 1 for replicas per
            GPU; default: one replica per visible GPU, else one on the CPU).
        engine: ``local`` or ``ray``.
        ray_address: the Ray cluster to join (``ray``).
    """

    model: str
    revision: str | None = None
    device: str | None = None
    dtype: str | None = None
    attn_implementation: str = "sdpa"
    packing: bool = True
    setting_overrides: dict[str, Any] = field(default_factory=dict)
    instruction: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_tokens_per_batch: int | None = None
    on_error: str = "raise"
    workers: int | None = None
    gpus_per_worker: float | None = None
    engine: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"--on-error must be raise or skip, got {self.on_error!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.batch_size < 1 or (self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1):
            raise ConfigError("--batch-size and --max-tokens-per-batch must be at least 1")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must not be negative, got {self.gpus_per_worker}")

    def load_encoder(self, device: str | None = None) -> UniteEncoder:
        """The encoder of this job on ``device`` (default: the job's device)."""
        from unite.models.encoder import UniteEncoder

        return UniteEncoder.from_pretrained(
            self.model,
            device=device or self.device,
            dtype=self.dtype,
            revision=self.revision,
            attn_implementation=self.attn_implementation,
            packing=self.packing,
            **self.setting_overrides,
        )


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records of the model, and what the CPU stage needs of it.

    Attributes:
        name: as given, or the absolute folder.
        fingerprint: ``weights_fingerprint`` of the weights (None when unknown).
        settings: the encoding settings in force (checkpoint's, then the job's overrides).
        dim: embedding size.
        tokenizer_folder: a folder ``AutoTokenizer.from_pretrained`` loads the model's tokenizer from.
    """

    name: str
    fingerprint: str | None
    settings: EncodingSettings
    dim: int
    tokenizer_folder: str

    @classmethod
    def from_encoder(cls, encoder: UniteEncoder, tokenizer_folder: str) -> ModelInfo:
        return cls(
            name=encoder.name_or_path,
            fingerprint=getattr(encoder, "weights_fingerprint", None),
            settings=encoder.settings,
            dim=encoder.embedding_dim,
            tokenizer_folder=tokenizer_folder,
        )


@dataclass
class WorkerStats:
    """What one worker did: ``items`` rows in ``busy_seconds`` of work."""

    name: str
    items: int = 0
    busy_seconds: float = 0.0


@dataclass
class EngineStats:
    """What one :meth:`Engine.run` did: rows done (``failed`` of them failed), wall seconds, per worker."""

    items: int = 0
    failed: int = 0
    seconds: float = 0.0
    workers: list[WorkerStats] = field(default_factory=list)


class Engine(Protocol):
    """Turns shards into rows; see the module docstring for the contract."""

    model: ModelInfo

    def run(self, shards: Sequence[ShardSpec], on_shard_done: OnShardDone, progress: Progress) -> EngineStats:
        """Make every shard of ``shards``, handing each to ``on_shard_done`` when its rows are done."""
        ...

    def close(self) -> None:
        """Release workers, devices and temporary files."""
        ...


def make_engine(job: BulkJob) -> Engine:
    """The engine ``job.engine`` names, ready to run (models loaded).

    Raises:
        ConfigError: the engine is not available (``ray``: Ray is not installed), or the job does not fit it.
    """
    if job.engine == "local":
        from unite.bulk.engine_local import LocalEngine

        return LocalEngine(job)
    from unite.bulk.engine_ray import RayEngine  # raises ConfigError, with the install line, without Ray

    return RayEngine(job)
