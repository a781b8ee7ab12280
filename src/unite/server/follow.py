"""A server that follows its index: every store call runs on one thread, after a check for a newer version.

A build or ``--sync`` that runs while the server is up commits new versions of the index; at most
``refresh_interval`` seconds later the server answers from the newest one, so it never keeps a handle to a
version that a build may clean up. When the index cannot be read (removed, corrupt, rebuilt with another model)
requests get 503 and /healthz says so, instead of 500s behind an "ok".
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from unite.server.errors import RequestError

__all__ = ["IndexFollower"]

logger = logging.getLogger(__name__)

#: Manifest fields that decide how a query must be encoded; a change means the running model no longer fits.
_ENCODING_FIELDS = ("settings", "dim")


class IndexFollower:
    """Runs store calls on a single thread, refreshing the store to its newest version at most every
    ``interval`` seconds.

    Args:
        store: an open :class:`unite.index.VectorStore`.
        interval: seconds between version checks.
        fingerprint: the served model's weights fingerprint; an index rebuilt with other weights is not served.
    """

    def __init__(self, store: Any, interval: float = 1.0, fingerprint: str | None = None) -> None:
        self.store = store
        self.interval = interval
        self.fingerprint = fingerprint
        self.problem: str | None = None
        self._checked = float("-inf")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unite-store")
        self._lock = asyncio.Lock()

    async def call(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the store thread, on a fresh version of the index.

        Raises:
            RequestError: 503 when the index cannot be read now.
        """
        await self.refresh()
        if self.problem is not None:
            raise RequestError(503, f"the index cannot be read: {self.problem}", headers={"Retry-After": "5"})
        try:
            return await self._run(function, *args)
        except Exception as error:  # a store error is the server's, never the client's: report it, never leak
            logger.exception("index read failed")
            self._checked = float("-inf")  # look again on the next request
            raise RequestError(503, "the index cannot be read right now; retry shortly") from error

    async def refresh(self, force: bool = False) -> None:
        """Move to the newest committed version when ``interval`` has passed since the last check."""
        async with self._lock:
            if not force and time.monotonic() - self._checked < self.interval:
                return
            self._checked = time.monotonic()
            try:
                moved = await self._run(self.store.refresh)
                self.problem = await self._run(self._manifest_problem)
            except Exception as error:
                logger.warning("cannot refresh the index: %s", error)
                self.problem = "its files are missing or unreadable (see the server log)"
                return
            if moved:
                logger.info("index moved to version %s", await self._run(self.store.version))

    async def status(self) -> dict[str, Any]:
        """What /healthz reports: version and item count served, or the problem."""
        await self.refresh()
        if self.problem is not None:
            return {"status": "unavailable", "problem": self.problem}
        try:
            version, count = await self._run(lambda: (self.store.version(), self.store.count()))
        except Exception as error:
            logger.warning("cannot read the index: %s", error)
            self._checked = float("-inf")
            return {"status": "unavailable", "problem": "its files are missing or unreadable (see the server log)"}
        return {"status": "ok", "version": version, "items": count}

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _manifest_problem(self) -> str | None:
        """A reason to stop serving when the index on disk was rebuilt with another model or settings."""
        from unite.index import read_manifest

        folder = getattr(self.store, "folder", None)
        served = getattr(self.store, "manifest", None)
        if folder is None or served is None:
            return None
        current = read_manifest(Path(folder))
        changed = [name for name in _ENCODING_FIELDS if getattr(current, name, None) != getattr(served, name, None)]
        recorded = getattr(current, "model_fingerprint", None)
        if recorded is not None and self.fingerprint is not None and recorded != self.fingerprint:
            changed.append("model (weights fingerprint)")
        if changed:
            return f"it was rebuilt with another {', '.join(changed)}; restart the server"
        return None
