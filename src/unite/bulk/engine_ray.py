"""``--engine ray``: the two stages of :mod:`unite.bulk.stages` as a Ray Data pipeline over a Ray cluster.

The pipeline, built by :meth:`RayEngine.run` from the shards still to make::

    shard specs -> read (tasks)   -> CPU stage (tasks)        -> model stage (actors)       -> the driver
                   read_rows,        prepare_rows: media,        embed_rows, one replica       rows grouped by shard;
                   one per shard     pixels, tokens; --workers   per --gpus-per-worker GPUs    on_shard_done once a
                                     at a time (default: all)    (else one on a CPU)           shard's rows are in

- Read: one task per shard reads its records (:func:`unite.bulk.sources.read_rows`); its output is cut into
  blocks of ``PREPARE_ROWS`` rows (a streaming repartition), so the CPU stage spreads one shard over many cores.
- CPU stage: tasks of one CPU each run :func:`unite.bulk.stages.prepare_rows`. A worker process builds the
  tokenizer once, from the checkpoint's tokenizer folder when that path exists on its node, else from a copy of
  the tokenizer files that the driver ships with the tasks.
- Model stage: actors that load the encoder once (``BulkJob.load_encoder``) and run
  :func:`unite.bulk.stages.embed_rows` on ``GROUP_BATCHES * --batch-size`` rows at a time (sorted by length and
  batched by token budget inside). ``--gpus-per-worker G`` (up to 1; 0.5 puts two replicas on a GPU) gives
  each actor G GPUs and the pool as many actors as the cluster's GPUs allow (default G: 1 when the cluster has
  GPUs); without GPUs, or with G = 0, one actor runs the model on a CPU. Each actor reserves one CPU.
- The driver takes the output blocks in the order they come (Ray Data keeps no order unless asked; regrouping
  is a dictionary look-up per block, see ``benchmarks/bulk_encode.py`` for the two measured), fills each
  shard's rows in line order and calls ``on_shard_done`` the moment a shard is whole. Progress and the
  per-worker figures (items and busy seconds of each CPU-stage process and each model actor) are counted there.

What travels between stages: records as pickled bytes (small); prepared rows as Arrow columns, the pixels of a
row as one float32 tensor (Ray Data's variable-shaped tensor column: written once, read back without a copy),
token ids likewise, and the visuals' kinds and grids as a small integer tensor; a row's error as its type's
name and message. Nothing that holds pixels is pickled.

Failures. A read or CPU-stage task whose worker process dies (killed, crashed, out of memory) is retried
``TASK_RETRIES`` times. A model actor that dies is restarted (without limit: a lost node must not end a long
run) and the batch it held is retried ``MODEL_TASK_RETRIES`` times. Work that keeps killing its worker fails the
run with one line and the rerun resumes (unlike the local engine, the row to blame is not isolated). A unite
error that is not a row's (a source that cannot be read, a checkpoint or tokenizer a node cannot load) travels
down the pipeline as data and is raised by the driver as it is, one line; nothing retries it. Killing the
driver loses only the shards not yet written: a local Ray instance dies with it, and a cluster ends the
driver's job with its tasks and actors.

``--on-error raise``: from the first failed row on, the driver reads only until every row before it (in shard
and line order) is in, having written the shards complete without a failure, then stops the pipeline and
raises the failure of the lowest (shard, line).

Paths: sources, media and the checkpoint are opened on the node that needs them, at the path the driver was
given; relative paths resolve against the driver's working folder (each worker moves there when its node has
that folder). On several machines they must be on storage that every node mounts at the same path.

Ray: ``--ray-address ADDR`` joins a running cluster (``auto``: the one ``ray start`` started on this machine);
without it a local instance starts with ``--workers`` CPUs (default: the cores available) plus one per model
replica, and stops at :meth:`RayEngine.close`. A process already connected to Ray (``ray.init`` called before)
keeps its connection, which is left open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unite import errors
from unite.bulk.engine import BulkJob, EngineStats, ModelInfo, OnShardDone, Progress, WorkerStats
from unite.bulk.engine_local import GROUP_BATCHES, available_cores
from unite.bulk.plan import ShardSpec
from unite.bulk.shards import ShardRows
from unite.bulk.sources import read_rows
from unite.bulk.stages import PreparedRow, embed_rows, prepare_rows, row_id
from unite.errors import ConfigError, UniteError

if TYPE_CHECKING:
    from unite.data.collator import Features
    from unite.models.encoder import UniteEncoder

__all__ = ["MODEL_TASK_RETRIES", "PREPARE_ROWS", "TASK_RETRIES", "RayEngine", "import_ray"]

#: Rows per CPU-stage task.
PREPARE_ROWS = 16
#: Retries of a read or CPU-stage task whose worker process died.
TASK_RETRIES = 3
#: Retries of a model batch whose actor died (the actor itself is restarted without limit).
MODEL_TASK_RETRIES = 3
#: CPUs a shard reader reserves: reading is light, and a reservation unlike the CPU stage's keeps Ray Data from
#: fusing the two (one task per shard would then prepare a whole shard on one core).
READ_CPUS = 0.25
#: CPUs a model replica reserves: it batches and copies rows, and without a GPU runs the model.
MODEL_CPUS = 1
#: A row's ``fatal`` column when nothing went wrong outside the rows.
_NO_FATAL = b""


def import_ray() -> Any:
    """The ``ray`` module, with Ray Data.

    Raises:
        ConfigError: Ray Data is not installed, with the line that installs it.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'unite-embed[ray]'") from None
    return ray


@dataclass(frozen=True)
class _Replicas:
    """Where the model runs: ``count`` actors of ``gpus`` GPUs each on ``device``."""

    count: int
    gpus: float
    device: str


def model_replicas(gpus_per_worker: float | None, device: str | None, cluster_gpus: float) -> _Replicas:
    """The model actors for ``--gpus-per-worker`` on a cluster with ``cluster_gpus`` GPUs.

    Raises:
        ConfigError: more than one GPU per replica, GPUs asked of a cluster without any, or a ``--device`` that
            contradicts where the replicas run.
    """
    per_replica = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
    if per_replica > 1:
        raise ConfigError(f"--gpus-per-worker {per_replica:g}: a replica runs on one GPU (or a fraction, up to 1)")
    if per_replica == 0:
        if device not in (None, "cpu"):
            raise ConfigError(f"--engine ray runs the model on a CPU here (no GPU asked for), but --device is {device}")
        return _Replicas(1, 0.0, "cpu")
    if not cluster_gpus:
        raise ConfigError(f"--gpus-per-worker {per_replica:g} needs GPUs; the Ray cluster has none")
    if device not in (None, "cuda"):
        raise ConfigError(f"--device {device}: Ray gives each replica its own GPU; leave --device out")
    return _Replicas(max(1, int(cluster_gpus / per_replica + 1e-9)), per_replica, "cuda")


class RayEngine:
    """The Ray engine; see the module docstring.

    Args:
        job: the run (``job.ray_address``: the cluster to join).
        preserve_order: have Ray Data deliver the rows in plan order (measured against regrouping by
            ``benchmarks/bulk_encode.py``; off by default).
    """

    def __init__(self, job: BulkJob, preserve_order: bool = False) -> None:
        self.job = job
        self.preserve_order = preserve_order
        self._ray = import_ray()
        self._started_ray = False
        self._scratch: tempfile.TemporaryDirectory | None = None
        try:
            self.model, self._tokenizer = self._describe_model()
            self.replicas = self._connect()
        except BaseException:
            self.close()
            raise

    def run(self, shards: Sequence[ShardSpec], on_shard_done: OnShardDone, progress: Progress) -> EngineStats:
        if not shards:
            return EngineStats()
        started = time.monotonic()
        collector = _Collector(shards, self.model.dim, self.job.on_error, on_shard_done, progress)
        batches = iter(self._dataset(shards).iter_batches(batch_size=None, batch_format="numpy"))
        try:
            for batch in _unwrapped(batches):
                if collector.add(batch):
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # ends the pipeline when the loop stopped early
        collector.finish()
        workers = sorted(collector.workers.values(), key=lambda stats: stats.name)
        return EngineStats(collector.items, collector.failed, time.monotonic() - started, workers)

    def close(self) -> None:
        if self._started_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_ray = False
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # ------------------------------------------------------------------------------------------------ set-up

    def _describe_model(self) -> tuple[ModelInfo, _Tokenizer]:
        """What the manifest records of the model, from a copy loaded on the driver's CPU (in bfloat16 unless
        the job names a dtype: only its files, settings and size are read), and its tokenizer files."""
        encoder = dataclasses.replace(self.job, dtype=self.job.dtype or "bfloat16").load_encoder("cpu")
        tokenizer = _Tokenizer.of(encoder)
        folder = Path(str(getattr(encoder.tokenizer, "name_or_path", "") or ""))
        if not (folder.is_dir() and any((folder / name).is_file() for name in _TOKENIZER_FILES)):
            self._scratch = tempfile.TemporaryDirectory(prefix="unite-tokenizer-")
            folder = tokenizer.write(Path(self._scratch.name))
        return ModelInfo.from_encoder(encoder, str(folder.resolve())), tokenizer

    def _connect(self) -> _Replicas:
        """Join ``--ray-address`` or start a local instance (a process already connected keeps its connection);
        the model replicas the cluster's GPUs allow."""
        ray, job = self._ray, self.job
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if ray.is_initialized() or job.ray_address is not None:
            if not ray.is_initialized():
                ray.init(address=job.ray_address, **options)
                self._started_ray = True
            return model_replicas(job.gpus_per_worker, job.device, ray.cluster_resources().get("GPU", 0))
        import torch

        gpus = torch.cuda.device_count()
        replicas = model_replicas(job.gpus_per_worker, job.device, gpus)
        cpus = (job.workers or available_cores()) + MODEL_CPUS * replicas.count
        # A local instance of this command's own enables token authentication by default and says so on every
        # start; the command has nothing to add to that, so the notice is left out of its output.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        notice.setLevel(logging.ERROR)
        try:
            ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, **options)
        finally:
            notice.setLevel(level)
        self._started_ray = True
        return replicas

    # --------------------------------------------------------------------------------------------- pipeline

    def _dataset(self, shards: Sequence[ShardSpec]) -> Any:
        import ray.data

        job, folder = self.job, str(Path.cwd())
        dataset = ray.data.from_items([dataclasses.asdict(spec) for spec in shards], override_num_blocks=len(shards))
        dataset = _map(
            dataset,
            _read_shards,
            {"max_retries": TASK_RETRIES},
            batch_size=1,
            fn_kwargs={"folder": folder},
            num_cpus=READ_CPUS,
        ).repartition(None, target_num_rows_per_block=PREPARE_ROWS)
        prepare = {
            "folder": folder,
            "tokenizer": self._tokenizer,
            "tokenizer_folder": self.model.tokenizer_folder,
            "settings": self.model.settings,
            "instruction": job.instruction,
        }
        dataset = _map(
            dataset,
            _prepare_batch,
            {"max_retries": TASK_RETRIES},
            batch_size=PREPARE_ROWS,
            fn_kwargs=prepare,
            compute=ray.data.TaskPoolStrategy(size=job.workers),
            num_cpus=1,
        )
        dataset = _map(
            dataset,
            _ModelActor,
            {"max_restarts": -1, "max_task_retries": MODEL_TASK_RETRIES},
            batch_size=max(GROUP_BATCHES * job.batch_size, PREPARE_ROWS),
            fn_constructor_kwargs={"job": job, "device": self.replicas.device, "folder": folder},
            compute=ray.data.ActorPoolStrategy(size=self.replicas.count),
            num_cpus=MODEL_CPUS,
            num_gpus=self.replicas.gpus,
        )
        context = dataset.context  # this dataset's settings: the driver shows progress, Ray Data does not
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        _quiet_console(logging.getLogger("ray.data"))
        context.execution_options.preserve_order = self.preserve_order
        return dataset


def _quiet_console(logger: logging.Logger) -> None:
    """Ray Data's messages on the console from warnings up (it prints each execution's start and end at INFO, and
    a warning that its progress bars are off, which the driver's own bar replaces); its log file keeps all."""
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
            if not any(isinstance(f, _NoProgressBarNotice) for f in handler.filters):
                handler.addFilter(_NoProgressBarNotice())


class _NoProgressBarNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars disabled")


def _map(dataset: Any, function: Any, retries: dict[str, int], **options: Any) -> Any:
    """``dataset.map_batches(function, **options)`` with the retry settings ``retries``.

    Ray 2.60 deprecates passing them as extra keyword arguments (the only way there is to set them on a map) and
    will remove it; where it is gone, Ray Data's own defaults (retries without limit) apply. Their difference is
    also what keeps Ray Data from fusing the CPU stage into the model actors when both reserve one CPU
    (``tests/test_bulk_ray.py`` checks that the two stages run in different processes).
    """
    accepts = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(dataset.map_batches).parameters.values())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        return dataset.map_batches(function, batch_format="numpy", **options, **(retries if accepts else {}))


def _unwrapped(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The batches; a failure of Ray itself (a worker that died beyond its retries, ...) as one line."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as error:  # unite's own errors arrive as data (the fatal column), never through here
            text = str(error).strip()
            first = text.splitlines()[-1] if text else ""
            raise UniteError(f"the Ray pipeline failed: {type(error).__name__}: {first}") from None
        yield batch


# ------------------------------------------------------------------------------------------ the driver's side


@dataclass
class _OpenShard:
    """A shard whose rows are arriving; ``filled`` marks those in."""

    spec: ShardSpec
    rows: ShardRows
    filled: np.ndarray

    @classmethod
    def of(cls, spec: ShardSpec, dim: int) -> _OpenShard:
        lines = list(range(spec.first_line, spec.last_line + 1))
        return cls(spec, ShardRows.empty(lines, [None] * spec.rows, dim), np.zeros(spec.rows, bool))


@dataclass
class _Collector:
    """Rows arriving in any order (a row that comes twice, from a retried task, counts once), gathered into
    shards: the contract's bookkeeping on the driver."""

    shards: Sequence[ShardSpec]
    dim: int
    on_error: str
    on_shard_done: OnShardDone
    progress: Progress
    items: int = 0
    failed: int = 0
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    failure: tuple[tuple[int, int], UniteError] | None = None

    def __post_init__(self) -> None:
        self.order = {spec.index: order for order, spec in enumerate(self.shards)}
        self.open: dict[int, _OpenShard] = {}
        self.done: set[int] = set()

    def add(self, batch: dict[str, np.ndarray]) -> bool:
        """Take one output block; True when the run can stop (``--on-error raise``: every row before the first
        failure is in).

        Raises:
            UniteError: what a stage met outside the rows (a source it cannot read, a model it cannot load).
        """
        fatal = next((data for data in batch["fatal"] if data), None)
        if fatal is not None:
            raise pickle.loads(fatal)  # pickled by this pipeline's own stages
        shard_column = batch["shard"]
        fresh = np.zeros(len(shard_column), bool)
        for index in np.unique(shard_column).tolist():
            where = np.flatnonzero(shard_column == index)
            fresh[where] = self._fill(index, where, batch)
        self._count(batch, fresh)
        self.progress(int(fresh.sum()))
        return self.failure is not None and self._before_failure_done()

    def finish(self) -> None:
        """After the last block: raise the failure (``--on-error raise``), or make sure every shard came."""
        if self.failure is not None:
            raise self.failure[1]
        missing = [spec.name for spec in self.shards if spec.index not in self.done]
        if missing:
            raise UniteError(f"the Ray pipeline ended without the rows of {', '.join(missing[:5])}")

    def _fill(self, index: int, where: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Put the rows ``where`` of ``batch`` into shard ``index``; which of them were new."""
        if index in self.done:
            return np.zeros(len(where), bool)
        shard = self.open.get(index) or self.open.setdefault(
            index, _OpenShard.of(self.shards[self.order[index]], self.dim)
        )
        rows = batch["row"][where]
        new = ~shard.filled[rows]
        rows, taken = rows[new], where[new]
        shard.rows.embeddings[rows] = batch["embedding"][taken]
        shard.rows.ok[rows] = batch["ok"][taken]
        shard.filled[rows] = True
        for row, position in zip(rows.tolist(), taken.tolist()):
            shard.rows.ids[row] = _id(batch, position)
            error = _error(batch["error_type"][position], batch["error"][position])
            shard.rows.errors[row] = error
            if error is not None and self.on_error == "raise":
                self._note_failure((self.order[index], row), error)
        if shard.filled.all():
            del self.open[index]
            self.done.add(index)
            if not (self.on_error == "raise" and shard.rows.failed):
                self.on_shard_done(shard.spec, shard.rows)
        return new

    def _count(self, batch: dict[str, np.ndarray], fresh: np.ndarray) -> None:
        self.items += int(fresh.sum())
        self.failed += int((fresh & ~batch["ok"]).sum())
        for name_key, seconds_key in (("prepared_by", "prepare_seconds"), ("embedded_by", "embed_seconds")):
            for name, seconds in zip(batch[name_key][fresh], batch[seconds_key][fresh]):
                stats = self.workers.setdefault(str(name), WorkerStats(str(name)))
                stats.items += 1
                stats.busy_seconds += float(seconds)

    def _note_failure(self, position: tuple[int, int], error: UniteError) -> None:
        if self.failure is None or position < self.failure[0]:
            self.failure = (position, error)

    def _before_failure_done(self) -> bool:
        """Every row before the failure (shards in plan order, then lines) is in: no earlier failure can come."""
        (order, row), _ = self.failure  # type: ignore[misc]
        if any(spec.index not in self.done for spec in self.shards[:order]):
            return False
        failing = self.open.get(self.shards[order].index)
        return failing is None or bool(failing.filled[:row].all())


def _error(type_name: Any, message: Any) -> UniteError | None:
    """A row's error as its type again (a class of :mod:`unite.errors`), None when it has none (``""``)."""
    if not message:
        return None
    kind = getattr(errors, str(type_name), UniteError)
    return (kind if isinstance(kind, type) and issubclass(kind, UniteError) else UniteError)(str(message))


# ------------------------------------------------------------------------------------------ the workers' side

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class _Tokenizer:
    """The model's tokenizer files, for workers on nodes where the driver's tokenizer folder does not exist."""

    files: dict[str, bytes]
    digest: str

    @classmethod
    def of(cls, encoder: UniteEncoder) -> _Tokenizer:
        with tempfile.TemporaryDirectory(prefix="unite-tokenizer-") as scratch:
            encoder.tokenizer.save_pretrained(scratch)
            files = {path.name: path.read_bytes() for path in sorted(Path(scratch).iterdir()) if path.is_file()}
        digest = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in files.items())).hexdigest()
        return cls(files, digest)

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder

    def folder_here(self, folder: str) -> str:
        """``folder`` when this node has it, else a copy of the files in the temporary folder (made once)."""
        if Path(folder).is_dir():
            return folder
        target = Path(tempfile.gettempdir()) / f"unite-tokenizer-{self.digest[:16]}"
        if not target.is_dir():
            staging = self.write(Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent)))
            try:
                staging.rename(target)
            except OSError:  # another worker of this node was first
                for path in staging.iterdir():
                    path.unlink()
                staging.rmdir()
        return str(target)


def _enter(folder: str) -> None:
    """Resolve relative paths as the driver does: move to its working folder when this node has it."""
    if str(Path.cwd()) != folder and Path(folder).is_dir():
        os.chdir(folder)


def _worker_name(role: str, device: str | None = None) -> str:
    import ray

    where = f"{ray.util.get_node_ip_address()}, pid {os.getpid()}"
    return f"{role} ({where}{', ' + device if device else ''})"


def _id_columns(ids: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Ids as ``id`` (the string, "" for none) and ``has_id``: no column holds None, which Ray Data may turn
    into NaN when a block has nothing else."""
    return {
        "id": _objects(["" if value is None else value for value in ids]),
        "has_id": np.array([v is not None for v in ids], bool),
    }


def _id(batch: dict[str, np.ndarray], position: int) -> str | None:
    return str(batch["id"][position]) if batch["has_id"][position] else None


def _error_columns(failures: Sequence[UniteError | None]) -> dict[str, np.ndarray]:
    """Errors as ``error_type`` and ``error`` (its class name and message; "" for none)."""
    return {
        "error_type": _objects(["" if error is None else type(error).__name__ for error in failures]),
        "error": _objects(["" if error is None else str(error) for error in failures]),
    }


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would stack arrays of one shape into a 2-D array)."""
    column = np.empty(len(values), dtype=object)
    column[:] = list(values)
    return column


def _read_shards(batch: dict[str, np.ndarray], folder: str) -> dict[str, np.ndarray]:
    """Read stage: the records of the shard specs in ``batch``, one row each; a shard that cannot be read is one
    row carrying the error in ``fatal``."""
    _enter(folder)
    shard, row, source, line, record, fatal = [], [], [], [], [], []
    for position in range(len(batch["index"])):
        spec = ShardSpec(**{name: _plain(batch[name][position]) for name in batch})
        try:
            records = [(r.line, pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), _NO_FATAL) for r in read_rows(spec)]
        except UniteError as error:
            records = [(0, b"", pickle.dumps(error))]
        for offset, (number, data, failure) in enumerate(records):
            shard.append(spec.index)
            row.append(offset)
            source.append(spec.source)
            line.append(number)
            record.append(data)
            fatal.append(failure)
    integers = {"shard": shard, "row": row, "line": line}
    return {key: np.array(values, dtype=np.int64) for key, values in integers.items()} | {
        "source": _objects(source),
        "record": _objects(record),
        "fatal": _objects(fatal),
    }


def _plain(value: Any) -> Any:
    """A value of a spec column as the Python value the ShardSpec field holds."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _prepare_batch(
    batch: dict[str, np.ndarray],
    folder: str,
    tokenizer: _Tokenizer,
    tokenizer_folder: str,
    settings: Any,
    instruction: str | None,
) -> dict[str, np.ndarray]:
    """CPU stage: records to prepared rows, as the columns of :func:`_prepared_columns`."""
    _enter(folder)
    started = time.perf_counter()
    sources = [str(source) for source in batch["source"]]
    fatal = list(batch["fatal"])
    prepared: list[PreparedRow] = []
    try:
        here = tokenizer.folder_here(tokenizer_folder)
        for start, stop in _runs(sources, fatal):  # rows of one source go to prepare_rows together
            if fatal[start]:
                prepared += [PreparedRow(sources[start], 0)] * (stop - start)
                continue
            records = [pickle.loads(data) for data in batch["record"][start:stop]]  # pickled by _read_shards
            prepared += prepare_rows(records, sources[start], settings, here, instruction)
    except UniteError as error:  # the tokenizer cannot be loaded here: the run's error, not a row's
        prepared, fatal = [PreparedRow(source, 0) for source in sources], [pickle.dumps(error)] * len(sources)
    columns = _prepared_columns(prepared)
    columns.update(shard=batch["shard"], row=batch["row"], fatal=_objects(fatal))
    columns["prepared_by"] = _objects([_worker_name("prepare")] * len(prepared))
    columns["prepare_seconds"] = np.full(len(prepared), (time.perf_counter() - started) / max(len(prepared), 1))
    return columns


def _runs(sources: list[str], fatal: list[bytes]) -> Iterator[tuple[int, int]]:
    """(start, stop) of the runs of consecutive rows with the same source and the same fatal flag."""
    start = 0
    for stop in range(1, len(sources) + 1):
        if stop == len(sources) or (sources[stop], bool(fatal[stop])) != (sources[start], bool(fatal[start])):
            yield start, stop
            start = stop


_NO_PIXELS = np.zeros((0, 0), dtype=np.float32)


def _prepared_columns(rows: Sequence[PreparedRow]) -> dict[str, np.ndarray]:
    """Prepared rows as columns: ``input_ids`` (L,) int64; ``pixels`` (P, C) float32, a row's images then videos
    ((0, 0) without); ``visuals`` (V, 4) int64, (is_video, t, h, w) of each; ``source``, ``line``, ``id``;
    ``error_type`` and ``error`` ("" when prepared)."""
    input_ids, pixels, visuals = [], [], []
    for row in rows:
        features = row.features
        inputs = [(0, v) for v in features.images] + [(1, v) for v in features.videos] if features else []
        arrays = [np.asarray(visual.pixel_values, dtype=np.float32) for _, visual in inputs]
        input_ids.append(np.asarray(features.input_ids if features else [], dtype=np.int64))
        pixels.append(arrays[0] if len(arrays) == 1 else np.concatenate(arrays) if arrays else _NO_PIXELS)
        visuals.append(np.array([[kind, *visual.grid_thw] for kind, visual in inputs], dtype=np.int64).reshape(-1, 4))
    return {
        "source": _objects([row.source for row in rows]),
        "line": np.array([row.line for row in rows], dtype=np.int64),
        **_id_columns([row.id for row in rows]),
        "input_ids": _objects(input_ids),
        "pixels": _objects(pixels),
        "visuals": _objects(visuals),
        **_error_columns([row.error for row in rows]),
    }


def _prepared_row(batch: dict[str, np.ndarray], position: int) -> PreparedRow:
    """Row ``position`` of a CPU-stage batch as a :class:`PreparedRow` again (its pixels are views, not copies)."""
    row = PreparedRow(str(batch["source"][position]), int(batch["line"][position]), _id(batch, position))
    row.error = _error(batch["error_type"][position], batch["error"][position])
    if row.error is None:
        row.features = _features(batch["input_ids"][position], batch["pixels"][position], batch["visuals"][position])
    return row


def _features(input_ids: np.ndarray, pixels: np.ndarray, visuals: np.ndarray) -> Features:
    from unite.data.collator import Features
    from unite.data.media import VisualInput

    features = Features(np.asarray(input_ids, dtype=np.int64).tolist())
    offset = 0
    for is_video, t, h, w in np.asarray(visuals).reshape(-1, 4).tolist():
        visual = VisualInput(pixels[offset : offset + t * h * w], (t, h, w))
        (features.videos if is_video else features.images).append(visual)
        offset += t * h * w
    return features


class _ModelActor:
    """Model stage: one replica of the encoder, loaded once per actor (again when Ray restarts it)."""

    def __init__(self, job: BulkJob, device: str, folder: str) -> None:
        _enter(folder)
        self.job = job
        self.fatal = _NO_FATAL
        self.encoder: UniteEncoder | None = None
        try:
            self.encoder = job.load_encoder(device)
        except UniteError as error:  # this node cannot load the checkpoint: the run's error, sent as data
            self.fatal = pickle.dumps(error)
        self.name = _worker_name("model", str(self.encoder.device) if self.encoder is not None else device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        count = len(batch["shard"])
        fatal = [self.fatal or data for data in batch["fatal"]]
        rows = [_prepared_row(batch, position) for position in range(count)]
        if any(fatal) or self.encoder is None:
            embeddings, ok, failures = np.zeros((count, 0), np.float32), np.zeros(count, bool), [None] * count
        else:
            result = embed_rows(self.encoder, rows, self.job.batch_size, self.job.max_tokens_per_batch)
            embeddings, ok, failures = result.embeddings, result.ok, result.errors
        return {
            "shard": batch["shard"],
            "row": batch["row"],
            **_id_columns([row_id(row.id) for row in rows]),
            "ok": ok,
            "embedding": embeddings,
            **_error_columns(failures),
            "fatal": _objects(fatal),
            "prepared_by": batch["prepared_by"],
            "prepare_seconds": batch["prepare_seconds"],
            "embedded_by": _objects([self.name] * count),
            "embed_seconds": np.full(count, (time.perf_counter() - started) / max(count, 1)),
        }
