"""The shard plan: which rows of which source go into which ``part-NNNNN.parquet``.

Each source's rows are cut into consecutive runs of ``shard_size`` rows (the last run of a file may be shorter);
a shard never crosses a source file, and shards are numbered from 0 over the sources in the order given. The
plan depends only on the sources' row counts and the shard size, so a rerun of the same command plans the same
shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unite.bulk.sources import JSONL, SourceFile
from unite.errors import ConfigError

__all__ = ["DEFAULT_SHARD_SIZE", "ShardSpec", "plan_shards", "shard_name"]

#: Rows per shard unless ``--shard-size`` says otherwise.
DEFAULT_SHARD_SIZE = 10000


def shard_name(index: int) -> str:
    """``part-00000.parquet`` for shard 0 (five digits, more past 99999)."""
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class ShardSpec:
    """One shard to make: a run of consecutive rows of one source. Picklable, so it travels to any worker.

    Attributes:
        index: its number, from 0 over all sources.
        name: its file name, ``part-NNNNN.parquet``.
        source: the source as given (see :class:`~unite.bulk.sources.SourceFile`).
        path: the source's absolute path.
        kind: ``jsonl`` or ``parquet``.
        first_line, last_line: the 1-based lines (rows) it holds, both included.
        offset: JSON lines: the byte offset where ``first_line`` starts; None for Parquet.
    """

    index: int
    name: str
    source: str
    path: str
    kind: str
    first_line: int
    last_line: int
    offset: int | None = None

    @property
    def rows(self) -> int:
        return self.last_line - self.first_line + 1


def plan_shards(sources: Sequence[SourceFile], shard_size: int) -> list[ShardSpec]:
    """The shards of ``sources`` in order; a source without rows has none."""
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    shards: list[ShardSpec] = []
    for source in sources:
        for run, first in enumerate(range(1, source.rows + 1, shard_size)):
            offset = source.offsets[run] if source.kind == JSONL else None
            shards.append(
                ShardSpec(
                    index=len(shards),
                    name=shard_name(len(shards)),
                    source=source.source,
                    path=source.path,
                    kind=source.kind,
                    first_line=first,
                    last_line=min(first + shard_size - 1, source.rows),
                    offset=offset,
                )
            )
    return shards
