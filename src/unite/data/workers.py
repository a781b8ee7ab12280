"""Items prepared in worker processes: media decoding, the two-stage pixels and tokenizing, off the GIL.

:class:`PreparationWorkers` runs :meth:`ItemProcessor.prepare <unite.data.collator.ItemProcessor.prepare>` in
``count`` processes of a :class:`unite.bulk.workers.WorkerPool` (``forkserver``, ``spawn`` where that is missing;
never ``fork``, which would copy torch's threads). Each worker builds its own ``ItemProcessor`` once, from the
pickled tokenizer and settings. :meth:`PreparationWorkers.submit` takes an item and returns a
``concurrent.futures.Future`` of its :class:`~unite.data.collator.Features`, from any thread; one dispatcher
thread owns the pool.

How pixels travel: a worker writes all the pixel arrays of an item, one after another, into one file in
``/dev/shm`` (shared memory; the temporary folder where there is none) whose name the driver chose, and sends
back only the token ids and each array's grid and row count. The driver maps the file (copy-on-write), removes
its name at once, and the item's arrays are views of that mapping: no array is pickled, and the memory goes back
when the arrays are freed. A worker that dies costs only the item it held: its future fails with
``the worker process preparing this item died (exit code N)``, its file (if any) is removed, and the pool starts
a replacement. An item's own failure arrives as the exception the same code raises in a thread, with the same
message.
"""

from __future__ import annotations

import atexit
import enum
import itertools
import logging
import mmap
import os
import pickle
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unite.data.collator import Features, ItemProcessor
from unite.data.media import VisualInput
from unite.errors import MediaError, UniteError
from unite.settings import EncodingSettings
from unite.types import Item, VideoClip

logger = logging.getLogger(__name__)

__all__ = [
    "THREADS_UP_TO_CORES",
    "PrepareIn",
    "PreparationWorkers",
    "available_cores",
    "in_memory",
    "shared_folder",
]

#: Seconds :meth:`PreparationWorkers.close` waits for the dispatcher thread to stop the workers.
CLOSE_SECONDS = 10.0


class PrepareIn(str, enum.Enum):
    """Where :meth:`UniteEncoder.encode <unite.models.encoder.UniteEncoder.encode>` prepares items with media
    files: in worker ``processes``, in ``threads`` of the calling process, or ``auto`` (the default): threads on a
    machine of at most :data:`THREADS_UP_TO_CORES` cores, processes on a larger one."""

    PROCESSES = "processes"
    THREADS = "threads"
    AUTO = "auto"

    def resolve(self, cores: int | None = None) -> PrepareIn:
        """``PROCESSES`` or ``THREADS``: this one, or what ``AUTO`` means with ``cores`` (default: those
        available)."""
        if self is not PrepareIn.AUTO:
            return self
        cores = available_cores() if cores is None else cores
        return PrepareIn.THREADS if cores <= THREADS_UP_TO_CORES else PrepareIn.PROCESSES


#: ``prepare_in="auto"`` prepares in threads up to this many cores. On two cores threads measured faster
#: (benchmarks/results/cpu_ratio.json): decoding and PIL resizing release the GIL, and the 24 MB of float32
#: patches of a 1280-token image need not cross a process boundary; with more cores the GIL-bound parts
#: (tokenizing, Python between the C calls) make processes the faster choice.
THREADS_UP_TO_CORES = 2


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def shared_folder() -> Path:
    """Where pixel files go: ``/dev/shm`` (memory) on Linux, else the temporary folder."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def in_memory(item: Item) -> bool:
    """Whether the item has no media files: only text, or media given as objects (PIL images, arrays, frame
    lists). Such items are prepared in the driver's threads, never pickled to a worker."""
    sources = [*item.images, *item.videos]
    return not sources or not all(isinstance(source, (str, Path, VideoClip)) for source in sources)


@dataclass
class _Prepared:
    """What a worker sends back for one item: token ids, and (kind, grid, rows) of each array in its file; or,
    when the file could not be written (a full or missing shared-memory folder, as Docker's 64 MB ``/dev/shm``
    is), the features themselves, pickled through the pipe."""

    input_ids: list[int]
    visuals: list[tuple[str, tuple[int, int, int], int]]
    path: str | None
    features: Features | None = None


class PreparationWorkers:
    """``count`` worker processes preparing items for one tokenizer and settings, started on first use.

    Args:
        tokenizer: the checkpoint's tokenizer (pickled to each worker once).
        settings: encoding settings.
        count: worker processes.
        fallback: where items go if the processes cannot start (a sandbox refusing sockets or ``/dev/shm``):
            called in ``count`` threads of this process, with a warning logged once. Without it, such items
            fail with the reason the workers could not start.
    """

    def __init__(
        self,
        tokenizer: Any,
        settings: EncodingSettings,
        count: int,
        fallback: Callable[[Item], Features] | None = None,
    ) -> None:
        self.settings, self.count, self.fallback = settings, count, fallback
        self._fallback_threads: ThreadPoolExecutor | None = None
        self._initargs = (pickle.dumps(tokenizer), settings)
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, Future, Item]] = deque()
        self._pending: dict[int, tuple[Future, Item]] = {}  # task id -> (future, item), while a worker holds it
        self._ids = itertools.count()
        self._prefix = f"unite-prepare-{os.getpid()}-{id(self):x}-"
        self._folder = shared_folder()
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self._closed = False
        self._broken: BaseException | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)  # a full pipe already wakes the dispatcher
        _LIVE.add(self)

    def submit(self, item: Item) -> Future:
        """A future of the item's :class:`Features` (or of the exception preparing it raised)."""
        future: Future = Future()
        with self._lock:
            if self._broken is not None:
                if self._fallback_threads is not None:
                    return self._fallback_threads.submit(self.fallback, item)
                future.set_exception(self._broken)
                return future
            if self._closed:
                raise UniteError("the preparation workers are closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="unite-prepare-dispatch", daemon=True)
                self._thread.start()
            self._queue.append((next(self._ids), future, item))
            self._wake()
        return future

    @property
    def failed(self) -> bool:
        """Whether the workers could not start (every item submitted fails with that error)."""
        return self._broken is not None

    def pids(self) -> list[int]:
        """Process ids of the workers ready or busy (empty before the first item and after :meth:`close`)."""
        pool = self._pool
        return [worker.pid for worker in list(pool.workers) if worker.pid is not None] if pool else []

    def running(self) -> dict[int, Item]:
        """The item each busy worker holds, by process id."""
        pool = self._pool
        if pool is None:
            return {}
        return {w.pid: w.task[1] for w in list(pool.workers) if w.busy and w.pid is not None and w.task}

    def close(self) -> None:
        """Stop the workers (each finishes nothing more) and fail the items not prepared yet."""
        with self._lock:
            if self._closed and self._wake_write < 0:
                return
            self._closed = True
            thread = self._thread
            self._wake()
        if thread is not None:
            thread.join(CLOSE_SECONDS)
        with self._lock:
            if (thread is None or not thread.is_alive()) and self._wake_write >= 0:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1
        if self._fallback_threads is not None:
            self._fallback_threads.shutdown(wait=False)
        _LIVE.discard(self)

    def _wake(self) -> None:
        """Wake the dispatcher (called holding the lock, so the pipe is open)."""
        if self._wake_write >= 0:
            try:
                os.write(self._wake_write, b"x")
            except BlockingIOError:
                pass

    # ------------------------------------------------------------------------------------- dispatcher thread

    def _dispatch(self) -> None:
        from unite.bulk.workers import WorkerPool  # a bottom-floor module: imports only unite.errors

        try:
            self._pool = WorkerPool(self.count, _init_worker, self._initargs, preload=[__name__])
            while not self._closed:
                self._submit_queued()
                events, woken = self._pool.wait(extra=[self._wake_read])
                if woken:
                    os.read(self._wake_read, 4096)
                for event in events:
                    self._settle(event)
        except BaseException as error:  # workers that cannot start: every item, now and later, gets the error
            self._broken = error if isinstance(error, UniteError) else UniteError(f"preparation workers: {error}")
        finally:
            self._stop()

    def _submit_queued(self) -> None:
        while self._pool.idle():
            with self._lock:
                if not self._queue:
                    return
                task_id, future, item = self._queue.popleft()
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            self._pending[task_id] = (future, item)
            self._pool.submit((task_id, item), _prepare_task, item, str(self._file(task_id)), str(Path.cwd()))

    def _settle(self, event: Any) -> None:
        from unite.bulk.workers import Died

        task_id = event.task[0]
        future, _ = self._pending.pop(task_id)
        path = self._file(task_id)
        if isinstance(event, Died):
            path.unlink(missing_ok=True)
            future.set_exception(
                MediaError(f"the worker process preparing this item died (exit code {event.exitcode})")
            )
        elif event.error is not None:
            future.set_exception(_received_error(event.error))
        else:
            try:
                future.set_result(_import(event.result))
            except OSError as error:
                future.set_exception(MediaError(f"cannot read the pixels a worker prepared ({error})"))

    def _stop(self) -> None:
        with self._lock:
            self._closed = True
            queued = [(future, item) for _, future, item in self._queue]
            self._queue.clear()
            if self._broken is not None and self.fallback is not None:
                logger.warning("preparation worker processes cannot start (%s); preparing in threads", self._broken)
                self._fallback_threads = ThreadPoolExecutor(self.count, thread_name_prefix="unite-media")
        if self._pool is not None:
            self._pool.close(kill=True)
        error = self._broken or UniteError("the preparation workers were closed before this item was prepared")
        for task_id in self._pending:
            self._file(task_id).unlink(missing_ok=True)
        running = list(self._pending.values())
        self._pending.clear()
        for future, item in running + [(f, item) for f, item in queued if f.set_running_or_notify_cancel()]:
            if self._fallback_threads is not None:
                self._fallback_threads.submit(_settle_with, future, self.fallback, item)
            else:
                future.set_exception(error)

    def _file(self, task_id: int) -> Path:
        return self._folder / f"{self._prefix}{task_id}"


_LIVE: weakref.WeakSet[PreparationWorkers] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for workers in list(_LIVE):
        workers.close()


def _settle_with(future: Future, function: Callable[[Item], Features], item: Item) -> None:
    try:
        future.set_result(function(item))
    except Exception as error:  # the item's own failure, as in a thread
        future.set_exception(error)


def _received_error(error: BaseException) -> BaseException:
    if isinstance(error, _ForeignError):
        return type(error.type_name, (Exception,), {})(error.message)  # named as in the worker, for the message
    return error


def _import(prepared: _Prepared) -> Features:
    """The features a worker sent, their arrays views of its file (mapped, then its name removed)."""
    if prepared.features is not None:
        return prepared.features
    if prepared.path is None:
        return Features(prepared.input_ids)
    try:
        with open(prepared.path, "rb") as file:
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    finally:
        Path(prepared.path).unlink(missing_ok=True)
    features = Features(prepared.input_ids)
    offset = 0
    for kind, grid, rows in prepared.visuals:
        array = np.frombuffer(mapping, dtype=np.float32, count=rows * _ROW, offset=offset).reshape(rows, _ROW)
        (features.images if kind == "image" else features.videos).append(VisualInput(array, grid))
        offset += array.nbytes
    return features


_ROW = 3 * 2 * 14 * 14


# ---------------------------------------------------------------------------------------------- in a worker

_WORKER: dict[str, ItemProcessor] = {}


class _ForeignError(Exception):
    """An item's exception that does not survive pickling, as its type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name, self.message = type_name, message


def _init_worker(tokenizer: bytes, settings: EncodingSettings) -> None:
    """Runs once in each worker: one torch thread, and the item processor."""
    import torch

    torch.set_num_threads(1)
    _WORKER["processor"] = ItemProcessor(pickle.loads(tokenizer), settings)


def _prepare_task(item: Item, path: str, cwd: str) -> _Prepared:
    """One item, in a worker: its features, the pixel arrays written to ``path``."""
    if str(Path.cwd()) != cwd:  # relative media paths mean what they mean in the driver
        os.chdir(cwd)
    try:
        features = _WORKER["processor"].prepare(item)
    except Exception as error:  # the item's own failure, raised again in the driver
        raise _portable(error) from None
    visuals = [("image", v) for v in features.images] + [("video", v) for v in features.videos]
    if not visuals:
        return _Prepared(features.input_ids, [], None)
    try:
        with open(path, "wb") as file:
            for _, visual in visuals:
                file.write(np.ascontiguousarray(visual.pixel_values, dtype=np.float32).data)
    except OSError:  # no room (or no folder) for the file: the arrays go through the pipe instead
        Path(path).unlink(missing_ok=True)
        return _Prepared(features.input_ids, [], None, features)
    return _Prepared(
        features.input_ids, [(kind, v.grid_thw, int(v.pixel_values.shape[0])) for kind, v in visuals], path
    )


def _portable(error: Exception) -> Exception:
    """``error`` itself if it pickles back to its type, else its type name and message."""
    try:
        if type(pickle.loads(pickle.dumps(error))) is type(error):
            return error
    except Exception:  # noqa: S110 (any pickling failure means: send it as text)
        pass
    return _ForeignError(type(error).__name__, str(error))
