"""Worker processes that run one task at a time each, over a pipe of their own, and survive each other's deaths.

``concurrent.futures.ProcessPoolExecutor`` is not used for the CPU stage: its workers share one result pipe, so
a worker killed while sending a result (a chunk of decoded pixels is megabytes) leaves half a message there and
the executor waits for the rest for ever (CPython 3.11); and a death fails every task in flight without saying
which one the dead worker held. Here each worker has its own pipe: a death costs its own task only, which the
caller gets back as :class:`Died` (with the exit code) while the pool starts a replacement.

Workers start with ``forkserver`` (``spawn`` where that is missing) without importing the driver's main script
(so ``python -c``, ``python -`` and scripts without an ``if __name__ == "__main__":`` guard work), ignore Ctrl-C
(the driver stops them), and end by themselves once the driver process is gone (a killed driver leaves no
workers behind).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

from unite.errors import UniteError

__all__ = ["Died", "Done", "WorkerPool"]

#: Seconds between a worker's checks that the driver is still there.
WATCHDOG_SECONDS = 1.0
#: Workers that may die in a row before becoming ready before the pool gives up.
MAX_STARTUP_DEATHS = 3
#: Seconds a worker gets to exit after being asked to, before it is killed.
STOP_SECONDS = 5.0


@dataclass
class Done:
    """A task finished: its ``result`` (or the exception it raised, as ``error``), in the worker ``pid``."""

    task: Any
    result: Any
    error: BaseException | None
    pid: int
    seconds: float


@dataclass
class Died:
    """The worker holding ``task`` died (``exitcode``: negative for a signal, as ``multiprocessing`` says)."""

    task: Any
    exitcode: int | None


@dataclass
class _Worker:
    process: Any
    connection: Any
    pid: int | None = None  # set when ready
    task: Any = None
    busy: bool = False


class WorkerPool:
    """``count`` worker processes, each running ``initializer(*initargs)`` once, then tasks one at a time.

    Args:
        count: workers.
        initializer: a module-level function run once in each worker; what it raises stops the pool (raised
            by :meth:`wait` in the driver).
        initargs: its arguments (picklable).
        preload: modules the fork server imports once, so that workers start in milliseconds.
    """

    def __init__(
        self, count: int, initializer: Callable[..., None], initargs: tuple, preload: Sequence[str] = ()
    ) -> None:
        methods = multiprocessing.get_all_start_methods()
        self.context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods and preload:
            self.context.set_forkserver_preload(list(preload))
        self.initializer, self.initargs = initializer, initargs
        self.driver = os.getpid()
        self.startup_deaths = 0
        self.workers: list[_Worker] = []
        try:
            for _ in range(count):
                self._start()
        except BaseException:
            self.close(kill=True)
            raise

    def idle(self) -> int:
        """Workers ready for a task."""
        return sum(worker.pid is not None and not worker.busy for worker in self.workers)

    def busy(self) -> int:
        """Tasks being run."""
        return sum(worker.busy for worker in self.workers)

    def submit(self, task: Any, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` (module-level, picklable) in an idle worker; ``task`` names it in the result."""
        worker = next(worker for worker in self.workers if worker.pid is not None and not worker.busy)
        worker.task, worker.busy = task, True
        try:
            worker.connection.send((function, args))
        except (BrokenPipeError, ConnectionResetError, EOFError):  # it just died: reported by wait()
            pass

    def wait(self, extra: Sequence[int] = (), timeout: float | None = None) -> tuple[list[Done | Died], bool]:
        """Wait until a worker reports or dies, or a file descriptor of ``extra`` is readable.

        Returns:
            (what happened to tasks, whether an ``extra`` descriptor is readable).

        Raises:
            UniteError: a worker's initializer failed (its own error), or workers keep dying as they start.
        """
        objects = [w.connection for w in self.workers] + [w.process.sentinel for w in self.workers] + list(extra)
        ready = set(wait_for(objects, timeout))
        events: list[Done | Died] = []
        for worker in list(self.workers):
            message = None
            if worker.connection in ready:
                try:
                    message = worker.connection.recv()
                except (EOFError, OSError):  # died, perhaps in the middle of a message
                    message = None
            if message is not None:
                events += self._message(worker, message)
            elif worker.connection in ready or worker.process.sentinel in ready:
                events += self._died(worker)
        return events, any(descriptor in ready for descriptor in extra)

    def close(self, kill: bool = False) -> None:
        """Stop every worker: ask it to exit (``kill``: kill it at once), then make sure it did."""
        for worker in self.workers:
            if kill:
                worker.process.kill()
                continue
            try:
                worker.connection.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            worker.process.join(max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.workers = []

    # ---------------------------------------------------------------------------------------------- internals

    def _start(self) -> None:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main,
            args=(child, self.driver, self.initializer, self.initargs),
            daemon=True,
            name="unite-prepare",
        )
        with _main_module_hidden():
            process.start()
        child.close()
        self.workers.append(_Worker(process, parent))

    def _message(self, worker: _Worker, message: tuple) -> list[Done | Died]:
        kind = message[0]
        if kind == "ready":
            worker.pid, self.startup_deaths = message[1], 0
            return []
        if kind == "failed":
            raise message[1]
        _, result, error, seconds = message
        task, worker.task, worker.busy = worker.task, None, False
        return [Done(task, result, error, worker.pid or 0, seconds)]

    def _died(self, worker: _Worker) -> list[Died]:
        worker.process.join(STOP_SECONDS)
        worker.connection.close()
        self.workers.remove(worker)
        if worker.pid is None:
            self.startup_deaths += 1
            if self.startup_deaths > MAX_STARTUP_DEATHS:
                raise UniteError(
                    f"the preparation worker processes die as they start (exit code {worker.process.exitcode}, "
                    f"{self.startup_deaths} in a row)"
                )
        self._start()
        return [Died(worker.task, worker.process.exitcode)] if worker.busy else []


# ------------------------------------------------------------------------------------------- in the worker


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a process without the parent's ``__main__``: ``multiprocessing`` would have the child import the
    parent's main script again (running any unguarded code in it, and failing outright for ``python -``,
    ``python -c`` or a script that is gone), but the workers run only unite's own functions. While a process
    starts, ``__main__`` shows neither a file nor a module spec, so its preparation data names no main module."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _worker_main(connection: Any, driver: int, initializer: Callable[..., None], initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(driver,), daemon=True, name="unite-watchdog").start()
    try:
        initializer(*initargs)
    except Exception as error:  # sent to the driver, which raises it as one line
        connection.send(("failed", error if isinstance(error, UniteError) else UniteError(_describe(error))))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, args = message
        started = time.monotonic()
        try:
            reply = ("done", function(*args), None, time.monotonic() - started)
        except Exception as error:  # the task's own failure: raised in the driver
            reply = ("done", None, error, time.monotonic() - started)
        try:
            connection.send(reply)
        except Exception as error:  # a result that cannot be pickled
            connection.send(("done", None, UniteError(_describe(error)), time.monotonic() - started))


def _describe(error: BaseException) -> str:
    return f"internal error in a preparation worker: {type(error).__name__}: {error}"


def _watch_driver(driver: int) -> None:
    """End this worker once the driver is gone. Watching the parent is not enough: under forkserver the parent
    is the fork server, which itself lives until every worker has exited."""
    while _alive(driver):
        time.sleep(WATCHDOG_SECONDS)
    os._exit(1)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists, is ours, and is not a zombie (dead, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another user
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): existence is all there is to know
        return True
    return state not in ("Z", "X")
