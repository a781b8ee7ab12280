"""``run_bulk``: SOURCE files to a folder of shards, resumable; what ``unite encode ... --output OUT_DIR/`` runs.

1. Expand and scan the sources, plan the shards (:mod:`unite.bulk.sources`, :mod:`unite.bulk.plan`).
2. Read the folder's manifest, if any, and refuse a different job (other instruction, shard size or inputs
   first, then, once the engine has loaded the model, other weights or settings), before writing anything. A
   folder holding shards but no manifest is refused too.
3. Keep the shards the manifest lists complete whose file's sha256 matches; every other shard is made.
4. Let the engine make them; each finished shard is written atomically and the manifest rewritten after it.
5. Return a :class:`BulkSummary`; a progress bar (tqdm: items/s, ETA, started at the rows already done) shows
   on stderr meanwhile.

What is kept where: ``OUT_DIR/part-NNNNN.parquet`` holds the rows (see :mod:`unite.bulk.shards`),
``OUT_DIR/_manifest.json`` the job and the state of every shard (see :mod:`unite.bulk.manifest`); nothing else
is written, except temporary files that a rename turns into those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from unite.bulk.engine import BulkJob, Engine, WorkerStats, make_engine
from unite.bulk.folder import OutputFolder
from unite.bulk.manifest import MANIFEST, Manifest, check_same_job
from unite.bulk.plan import DEFAULT_SHARD_SIZE, ShardSpec, plan_shards
from unite.bulk.shards import ShardRows, write_shard
from unite.bulk.sources import scan_sources
from unite.errors import ConfigError

__all__ = ["BulkSummary", "run_bulk"]


@dataclass
class BulkSummary:
    """What a bulk run did.

    Attributes:
        output: the output folder as given.
        rows: input rows of all sources.
        ok, failed: rows embedded and failed over every complete shard (this run's and earlier runs').
        shards: shards planned; ``reused`` of them were complete before this run, ``written`` by it.
        items, items_failed: rows done by this run, and how many of them failed.
        seconds: wall time of the engine.
        workers: what each worker did in this run.
    """

    output: str
    rows: int
    ok: int
    failed: int
    shards: int
    reused: int
    written: int
    items: int
    items_failed: int
    seconds: float
    workers: list[WorkerStats] = field(default_factory=list)


def run_bulk(
    sources: Sequence[str],
    output: str,
    job: BulkJob,
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = True,
    engine_factory: Callable[[BulkJob], Engine] = make_engine,
) -> BulkSummary:
    """Encode every row of ``sources`` into shards in ``output`` (a folder path or URI), resuming a killed run.

    Raises:
        ConfigError: the folder holds another job's shards (naming what differs), or bad settings.
        InputError: a source cannot be read, or (``job.on_error == "raise"``) the first bad row, as
            ``FILE:LINE: reason``; the shards completed before it stay, and the manifest lists them.
    """
    folder = OutputFolder(output)
    files = scan_sources(sources, shard_size)
    plan = plan_shards(files, shard_size)
    where = folder.uri(MANIFEST)
    existing = _existing_manifest(folder)
    if existing is not None:  # the inputs are compared before the model is loaded
        inputs = Manifest.new("", None, {}, job.instruction, 0, shard_size, files, plan)
        check_same_job(existing, inputs, where, compare_model=False)
    engine = engine_factory(job)
    try:
        model = engine.model
        manifest = Manifest.new(
            model.name, model.fingerprint, model.settings.to_dict(), job.instruction, model.dim, shard_size, files, plan
        )
        if existing is not None:
            check_same_job(existing, manifest, where)
            existing.verified_complete(folder)
            manifest = existing
        folder.create()
        manifest.write(folder)
        return _make_shards(folder, manifest, plan, engine, job, show_progress)
    finally:
        engine.close()


def _make_shards(
    folder: OutputFolder, manifest: Manifest, plan: list[ShardSpec], engine: Engine, job: BulkJob, show: bool
) -> BulkSummary:
    todo = [spec for spec in plan if not manifest.entry(spec.name).complete]
    reused = len(plan) - len(todo)

    def on_shard_done(spec: ShardSpec, rows: ShardRows) -> None:
        if job.on_error == "raise" and rows.failed:
            raise rows.first_error()  # type: ignore[misc]
        manifest.entry(spec.name).done(write_shard(folder, spec, rows))
        manifest.write(folder)

    counts = manifest.counts
    with tqdm(
        total=counts["rows"],
        initial=counts["rows"] - sum(spec.rows for spec in todo),
        unit="item",
        desc="Encoding",
        disable=not show,
    ) as bar:
        stats = engine.run(todo, on_shard_done, bar.update)
    counts = manifest.counts
    return BulkSummary(
        output=folder.output,
        rows=counts["rows"],
        ok=counts["ok"],
        failed=counts["failed"],
        shards=counts["shards"],
        reused=reused,
        written=counts["complete_shards"] - reused,
        items=stats.items,
        items_failed=stats.failed,
        seconds=stats.seconds,
        workers=stats.workers,
    )


def _existing_manifest(folder: OutputFolder) -> Manifest | None:
    """The folder's manifest; a folder with shards but no manifest is refused."""
    existing = Manifest.read(folder)
    if existing is None and any(name.startswith("part-") for name in folder.names()):
        raise ConfigError(
            f"{folder.uri()} holds part-*.parquet files but no {MANIFEST}; they are not shards of a unite run "
            "(or its manifest was lost): use an empty or new --output folder"
        )
    return existing
