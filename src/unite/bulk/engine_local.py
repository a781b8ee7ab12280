"""``--engine local``: one machine, worker processes for the CPU stage, the model in the driver.

- ``--workers N`` processes (default: the cores available; :class:`unite.bulk.workers.WorkerPool`) run
  :func:`unite.bulk.stages.prepare_rows` on chunks of ``PREPARE_CHUNK`` rows, one chunk per worker at a time:
  media decoding, the two-stage pixel pipeline and tokenizing. Each builds its own ``ItemProcessor`` from the
  tokenizer folder and the settings; none loads the model.
- The driver reads each shard's records (:func:`unite.bulk.sources.read_rows`), hands out chunks in order, and
  runs :func:`unite.bulk.stages.embed_rows` on what comes back, in one thread per model replica: one replica on
  the CPU, or one per visible GPU (several per GPU with ``--gpus-per-worker 0.5`` and the like). At most
  ``2 * workers + 2`` chunks are being prepared or wait for the model, which bounds the memory held in pixels.
- A shard is handed to ``on_shard_done`` as soon as its last row is embedded, rows in line order.
- A worker that dies (killed, crashed, out of memory) is replaced, and the chunk it held is prepared again row
  by row; a row that kills a worker on its own twice fails with ``the worker process preparing this item died
  (exit code N)``, the rest of the run going on. Workers that cannot start, or ``MAX_DEATHS_IN_A_ROW`` deaths
  with nothing prepared in between, stop the run with one line.
- ``--on-error raise``: at the first failure nothing more is handed out; the rows handed out before are
  finished, the shards complete without a failure are written, and the failure of the lowest (shard, line)
  is raised.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unite.bulk.engine import BulkJob, EngineStats, ModelInfo, OnShardDone, Progress, WorkerStats
from unite.bulk.plan import ShardSpec
from unite.bulk.shards import ShardRows
from unite.bulk.sources import read_rows
from unite.bulk.stages import PreparedRow, embed_rows, prepare_rows, processor_for, row_id
from unite.bulk.workers import Done, WorkerPool
from unite.data.jsonl import JsonlRecord
from unite.errors import ConfigError, MediaError, UniteError
from unite.settings import EncodingSettings

if TYPE_CHECKING:
    from unite.models.encoder import UniteEncoder

__all__ = ["PREPARE_CHUNK", "WORKER_DIED", "LocalEngine", "available_cores", "replica_devices"]

#: Rows per preparation task.
PREPARE_CHUNK = 8
#: A model replica takes at most this many batches' worth of prepared rows at a time.
GROUP_BATCHES = 4
#: The error of a row whose worker process died twice while preparing it alone.
WORKER_DIED = "the worker process preparing this item died (killed, crashed or out of memory)"
#: Worker deaths in a row, with no chunk prepared in between, after which the run stops.
MAX_DEATHS_IN_A_ROW = 32


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def replica_devices(device: str | None, gpus_per_worker: float | None) -> list[str]:
    """Where the model replicas go: one on ``device`` unless it is the plain GPU choice, which gets one replica
    per visible GPU (``1 / gpus_per_worker`` per GPU for a fraction).

    Raises:
        ConfigError: ``gpus_per_worker`` above 1 (one process cannot split a replica over GPUs), or GPUs asked
            for on a CPU device.
    """
    from unite.models.loading import resolve_device

    if gpus_per_worker is not None and gpus_per_worker > 1:
        raise ConfigError(
            f"--gpus-per-worker {gpus_per_worker}: the local engine runs a replica on one GPU (or a fraction "
            "of one, up to 1); spread replicas over several GPUs with --engine ray"
        )
    if gpus_per_worker == 0:
        if device not in (None, "cpu"):
            raise ConfigError(f"--gpus-per-worker 0 runs the model on the CPU, but --device is {device}")
        return ["cpu"]
    target = resolve_device(device)
    if target.type != "cuda":
        if gpus_per_worker is not None:
            raise ConfigError(f"--gpus-per-worker {gpus_per_worker} needs a GPU; the model runs on {target}")
        return [str(target)]
    if target.index is not None:
        return [str(target)]
    import torch

    per_gpu = max(1, int(1 / (gpus_per_worker or 1) + 1e-9))
    return [f"cuda:{gpu}" for gpu in range(torch.cuda.device_count()) for _ in range(per_gpu)]


class LocalEngine:
    """The local engine; see the module docstring.

    Args:
        job: the run.
        encoders: model replicas already loaded (default: loaded from ``job`` on :func:`replica_devices`).
    """

    def __init__(self, job: BulkJob, encoders: Sequence[UniteEncoder] | None = None) -> None:
        self.job = job
        devices = None if encoders is not None else replica_devices(job.device, job.gpus_per_worker)
        self.encoders = list(encoders) if encoders is not None else [job.load_encoder(d) for d in devices or []]
        if not self.encoders:
            raise ConfigError("no GPU is visible to run the model on; pass --device cpu")
        self.workers = job.workers or available_cores()
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.model = ModelInfo.from_encoder(self.encoders[0], self._tokenizer_folder(self.encoders[0]))

    def run(self, shards: Sequence[ShardSpec], on_shard_done: OnShardDone, progress: Progress) -> EngineStats:
        if not shards:
            return EngineStats()
        return _LocalRun(self, shards, on_shard_done, progress).run()

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _tokenizer_folder(self, encoder: UniteEncoder) -> str:
        """The folder the tokenizer was loaded from, else a copy saved to a temporary folder."""
        folder = Path(str(getattr(encoder.tokenizer, "name_or_path", "") or ""))
        if folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            return str(folder.resolve())
        self._scratch = tempfile.TemporaryDirectory(prefix="unite-tokenizer-")
        encoder.tokenizer.save_pretrained(self._scratch.name)
        return self._scratch.name


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class _OpenShard:
    """A shard whose records were read and whose rows are being filled."""

    spec: ShardSpec
    rows: ShardRows
    remaining: int


@dataclass
class _Chunk:
    """Consecutive records of one shard, prepared by one task; ``deaths``: workers it killed on its own."""

    shard: _OpenShard
    start: int
    records: list[JsonlRecord]
    deaths: int = 0

    def split(self) -> list[_Chunk]:
        return [_Chunk(self.shard, self.start + i, [record]) for i, record in enumerate(self.records)]


@dataclass
class _Failure:
    position: tuple[int, int]
    error: UniteError


class _LocalRun:
    """The state of one :meth:`LocalEngine.run`: chunks being prepared, waiting for the model, being embedded."""

    def __init__(
        self, engine: LocalEngine, shards: Sequence[ShardSpec], on_shard_done: OnShardDone, progress: Progress
    ) -> None:
        self.engine, self.job, self.model = engine, engine.job, engine.model
        self.on_shard_done, self.progress = on_shard_done, progress
        self.chunks = self._chunks(shards)
        self.limit = 2 * engine.workers + 2
        self.group_rows = max(GROUP_BATCHES * self.job.batch_size, PREPARE_CHUNK)
        self.retry: deque[_Chunk] = deque()
        self.ready: deque[tuple[_Chunk, list[PreparedRow]]] = deque()
        self.embedding: dict[Future, tuple[int, list[tuple[_Chunk, list[PreparedRow]]]]] = {}
        self.free_replicas = deque(range(len(engine.encoders)))  # round robin: the longest idle goes first
        self.exhausted = self.stopping = False
        self.failure: _Failure | None = None
        self.deaths_in_a_row = 0
        self.workers_stats: dict[str, WorkerStats] = {}
        self.items = self.failed = 0

    def run(self) -> EngineStats:
        started = time.monotonic()
        self.wake_read, self.wake_write = os.pipe()  # model threads wake the loop through it
        self.embedders = ThreadPoolExecutor(len(self.engine.encoders), thread_name_prefix="unite-model")
        pool: WorkerPool | None = None
        finished = False
        try:
            self.pool = pool = WorkerPool(
                self.engine.workers,
                _init_worker,
                (self.model.tokenizer_folder, self.model.settings, self.job.instruction),
                preload=[__name__],
            )
            while self._step():
                pass
            finished = True
        finally:
            if pool is not None:
                pool.close(kill=not finished)  # on an error or Ctrl-C the workers are killed at once
            self.embedders.shutdown(wait=True, cancel_futures=True)
            os.close(self.wake_read)
            os.close(self.wake_write)
        if self.failure is not None:
            raise self.failure.error
        workers = sorted(self.workers_stats.values(), key=lambda stats: stats.name)
        return EngineStats(self.items, self.failed, time.monotonic() - started, workers)

    # ------------------------------------------------------------------------------------------- the loop

    def _step(self) -> bool:
        self._submit()
        self._dispatch()
        if not (self.pool.busy() or self.embedding or self.ready or self.retry) and (self.exhausted or self.stopping):
            return False
        events, woken = self.pool.wait(extra=[self.wake_read])
        if woken:
            os.read(self.wake_read, 1024)
        for event in events:
            if isinstance(event, Done):
                self._prepared(event)
            else:
                self._died(event.task, event.exitcode)
        for future in [future for future in self.embedding if future.done()]:
            self._embedded(future)
        return True

    def _chunks(self, shards: Sequence[ShardSpec]) -> Iterator[_Chunk]:
        for spec in shards:
            records = read_rows(spec)
            rows = ShardRows.empty([r.line for r in records], [row_id(r.id) for r in records], self.model.dim)
            shard = _OpenShard(spec, rows, len(records))
            for start in range(0, len(records), PREPARE_CHUNK):
                yield _Chunk(shard, start, records[start : start + PREPARE_CHUNK])

    def _submit(self) -> None:
        while self.pool.idle():
            if self.retry:
                chunk = self.retry.popleft()
            elif self.exhausted or self.stopping or self.pool.busy() + len(self.ready) >= self.limit:
                return
            else:
                chunk = next(self.chunks, None)
                if chunk is None:
                    self.exhausted = True
                    return
                if self.job.on_error == "raise" and any(record.error is not None for record in chunk.records):
                    self.stopping = True  # nothing after this bad line; the rows before it are still finished
            self.pool.submit(chunk, _prepare_task, chunk.records, chunk.shard.spec.source)

    def _dispatch(self) -> None:
        while self.ready and self.free_replicas:
            group: list[tuple[_Chunk, list[PreparedRow]]] = []
            count = 0
            while self.ready and (not group or count + len(self.ready[0][1]) <= self.group_rows):
                group.append(self.ready.popleft())
                count += len(group[-1][1])
            replica = self.free_replicas.popleft()
            future = self.embedders.submit(self._embed, replica, group)
            future.add_done_callback(lambda _: os.write(self.wake_write, b"."))
            self.embedding[future] = (replica, group)

    def _embed(self, replica: int, group: list[tuple[_Chunk, list[PreparedRow]]]) -> tuple[Any, float]:
        """Runs in the replica's thread."""
        started = time.monotonic()
        rows = [row for _, prepared in group for row in prepared]
        result = embed_rows(self.engine.encoders[replica], rows, self.job.batch_size, self.job.max_tokens_per_batch)
        return result, time.monotonic() - started

    # -------------------------------------------------------------------------------------------- results

    def _prepared(self, done: Done) -> None:
        if done.error is not None:
            raise done.error
        self.deaths_in_a_row = 0
        chunk, rows = done.task, done.result
        self._count(f"prepare (pid {done.pid})", len(rows), done.seconds)
        self._note_failures(chunk, [row.error for row in rows])
        self.ready.append((chunk, rows))

    def _died(self, chunk: _Chunk, exitcode: int | None) -> None:
        """A worker died holding ``chunk``: its rows are prepared again one by one; a row that kills a worker on
        its own twice fails with :data:`WORKER_DIED`."""
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > MAX_DEATHS_IN_A_ROW:
            raise UniteError(
                f"the preparation worker processes keep dying ({self.deaths_in_a_row} in a row, last with exit "
                f"code {exitcode}, at {chunk.shard.spec.source}:{chunk.records[0].line}); completed shards are "
                "kept, rerun the command to resume"
            )
        if len(chunk.records) > 1:
            self.retry.extendleft(reversed(chunk.split()))
            return
        chunk.deaths += 1
        if chunk.deaths < 2:  # once may be a kill from outside; twice alone is this row
            self.retry.appendleft(chunk)
            return
        record, source = chunk.records[0], chunk.shard.spec.source
        error = MediaError(f"{source}:{record.line}: {WORKER_DIED} (exit code {exitcode})")
        self._note_failures(chunk, [error])
        self.ready.append((chunk, [PreparedRow(source, record.line, row_id(record.id), error=error)]))

    def _embedded(self, future: Future) -> None:
        replica, group = self.embedding.pop(future)
        self.free_replicas.append(replica)
        result, seconds = future.result()
        encoder = self.engine.encoders[replica]
        self._count(f"model ({encoder.device}, replica {replica})", len(result.ok), seconds)
        offset = 0
        for chunk, prepared in group:
            span = slice(offset, offset + len(prepared))
            offset += len(prepared)
            self._store(chunk, result.embeddings[span], result.ok[span], result.errors[span])
        self.items += len(result.ok)
        self.failed += int(len(result.ok) - result.ok.sum())
        self.progress(len(result.ok))

    def _store(self, chunk: _Chunk, embeddings: Any, ok: Any, errors: list[UniteError | None]) -> None:
        shard, span = chunk.shard, slice(chunk.start, chunk.start + len(chunk.records))
        shard.rows.embeddings[span] = embeddings
        shard.rows.ok[span] = ok
        shard.rows.errors[span] = errors
        shard.remaining -= len(chunk.records)
        self._note_failures(chunk, errors)
        if shard.remaining == 0 and not (self.job.on_error == "raise" and shard.rows.failed):
            self.on_shard_done(shard.spec, shard.rows)

    def _note_failures(self, chunk: _Chunk, errors: Sequence[UniteError | None]) -> None:
        """Under ``--on-error raise``, remember the failure of the lowest (shard, line) and stop handing out."""
        if self.job.on_error != "raise":
            return
        for offset, error in enumerate(errors):
            if error is not None:
                position = (chunk.shard.spec.index, chunk.start + offset)
                if self.failure is None or position < self.failure.position:
                    self.failure = _Failure(position, error)
                self.stopping = True
                return

    def _count(self, name: str, items: int, seconds: float) -> None:
        stats = self.workers_stats.setdefault(name, WorkerStats(name))
        stats.items += items
        stats.busy_seconds += seconds


# ---------------------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_folder: str, settings: EncodingSettings, instruction: str | None) -> None:
    """Runs once in each worker: one torch thread, and the item processor built from the tokenizer folder."""
    import torch

    torch.set_num_threads(1)
    processor_for(tokenizer_folder, settings)  # loaded now, so a bad folder fails the start, not a task
    _WORKER.update(tokenizer_folder=tokenizer_folder, settings=settings, instruction=instruction)


def _prepare_task(records: list[JsonlRecord], source: str) -> list[PreparedRow]:
    """One chunk, in a worker."""
    return prepare_rows(records, source, _WORKER["settings"], _WORKER["tokenizer_folder"], _WORKER["instruction"])
