"""Corpus-scale encoding: many sources, sharded output, resumable, on a local pool of processes or on Ray.

Floors, each depending only on those above it in this list (and on ``unite.data`` / ``unite.models``):

- :mod:`unite.bulk.sources`: SOURCE arguments expanded (files, globs) and scanned (rows, size, mtime, where each
  shard starts); the rows of a line range read through the one guarded reader :mod:`unite.data.jsonl`.
- :mod:`unite.bulk.plan`: the shard plan, a list of :class:`~unite.bulk.plan.ShardSpec`.
- :mod:`unite.bulk.folder`: the output folder on any pyarrow filesystem (a path or a ``file://``, ``s3://``,
  ``gs://`` URI), atomic writes.
- :mod:`unite.bulk.shards`: one shard written atomically with the exact schema, or read back.
- :mod:`unite.bulk.manifest`: ``_manifest.json``: read, written, compared (the refusal to mix), complete shards.
- :mod:`unite.bulk.stages`: the two per-row stages as plain functions any engine calls: ``prepare_rows`` (media
  decoding, pixels, tokens; CPU, no model) and ``embed_rows`` (the model).
- :mod:`unite.bulk.engine`: the :class:`~unite.bulk.engine.Engine` interface every engine implements, the job
  description and the statistics it returns.
- :mod:`unite.bulk.engine_local`: ``--engine local``: worker processes prepare, the driver's model replicas embed.
- :mod:`unite.bulk.run`: :func:`~unite.bulk.run.run_bulk`, what ``unite encode SOURCE... --output OUT_DIR/`` calls.

Nothing here is imported by ``import unite``; this ``__init__`` imports nothing, so worker processes that import
:mod:`unite.bulk.stages` load only what preparing rows needs.
"""
