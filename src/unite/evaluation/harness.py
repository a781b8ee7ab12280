"""Tasks by name or file, evaluated one after another, each result written as it finishes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unite.errors import ConfigError
from unite.evaluation.loaders import MISSING_MEDIA_RAISE, TaskData, load_task_data
from unite.evaluation.locate import data_folder
from unite.evaluation.registry import resolve_task_names
from unite.evaluation.reports import rankings_path, summary_markdown, write_result
from unite.evaluation.runner import EvalConfig, evaluate_task
from unite.evaluation.tasks import TaskSpec, load_task_spec

__all__ = ["DATA_ROOT_ENV", "MISSING_MEDIA_OPTION", "LoadedTask", "evaluate", "load_tasks", "resolve_tasks"]

#: Where registered benchmarks' data lives when ``data_root`` is not given.
DATA_ROOT_ENV = "UNITE_EVAL_DATA"
SUMMARY_FILE = "summary.md"
#: ``options`` key of a task spec: ``raise`` (default) or ``drop`` the items whose media files are missing.
MISSING_MEDIA_OPTION = "missing_media"


@dataclass
class LoadedTask:
    spec: TaskSpec
    folder: Path
    data: TaskData


def resolve_tasks(
    values: Sequence[str | Path | TaskSpec], data_root: str | Path | None = None
) -> list[tuple[TaskSpec, Path]]:
    """Turn task arguments into (spec, data folder) pairs.

    A value is a ``task.yaml`` path (its folder holds the data), a :class:`TaskSpec`, or a registered task or
    group name, whose data lies under ``data_root`` (default: the ``UNITE_EVAL_DATA`` environment variable).

    Raises:
        ConfigError: an unknown name, a missing file, or a registered task without a data root.
    """
    resolved = []
    for value in values:
        if isinstance(value, TaskSpec):
            specs = [value]
        elif str(value).endswith((".yaml", ".yml")) or Path(value).is_file():
            resolved.append(load_task_spec(value))
            continue
        else:
            specs = resolve_task_names(str(value))
        root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
        if root is None:
            raise ConfigError(
                f"task {value}: where is its data? pass --data-root DIR (or set {DATA_ROOT_ENV}); "
                f"it is read from DIR/{specs[0].data_dirs[0]} (`unite eval layout {specs[0].name}` shows the tree)"
            )
        resolved += [(spec, data_folder(spec.name, spec.data_dirs, root)) for spec in specs]
    names = [spec.name for spec, _ in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"task(s) given twice: {', '.join(duplicates)}")
    return resolved


def load_tasks(
    values: Sequence[str | Path | TaskSpec], data_root: str | Path | None = None, check_media: bool = True
) -> list[LoadedTask]:
    """Resolve and load every task before any model is loaded, so that bad specs fail at once.

    With ``check_media``, a missing media file raises, unless the task's spec says
    ``options: {missing_media: drop}``: then the queries and candidates naming one are skipped and reported.
    """
    loaded = []
    for spec, folder in resolve_tasks(values, data_root):
        data = load_task_data(spec, folder)
        if check_media:
            data = data.check_media(spec.options.get(MISSING_MEDIA_OPTION, MISSING_MEDIA_RAISE))
        loaded.append(LoadedTask(spec, folder, data))
    return loaded


def evaluate(
    encoder: Any,
    tasks: Sequence[str | Path | TaskSpec | LoadedTask],
    output_dir: str | Path | None = None,
    config: EvalConfig | None = None,
    data_root: str | Path | None = None,
) -> list[dict]:
    """Evaluate ``encoder`` on ``tasks``; with ``output_dir``, write ``<task>.json`` each and ``summary.md``.

    With ``config.save_rankings``, each task's rankings go beside its result (``<task>.rankings.jsonl``).

    Returns:
        The result records (empty on ranks other than 0 under ``torchrun``).

    Raises:
        ConfigError: ``save_rankings`` without ``output_dir``.
    """
    if config is not None and config.save_rankings and output_dir is None:
        raise ConfigError("save_rankings writes <task>.rankings.jsonl beside each result: give an output_dir")
    loaded = [task for task in tasks if isinstance(task, LoadedTask)]
    others = [task for task in tasks if not isinstance(task, LoadedTask)]
    loaded += load_tasks(others, data_root) if others else []
    results = []
    save_rankings = config is not None and config.save_rankings and output_dir is not None
    for task in loaded:
        rankings = rankings_path(output_dir, task.spec.name) if save_rankings else None
        result = evaluate_task(encoder, task.spec, task.data, config, rankings_path=rankings)
        if result is None:
            continue
        if output_dir is not None:
            write_result(output_dir, result)
        results.append(result)
    if output_dir is not None and results:
        (Path(output_dir) / SUMMARY_FILE).write_text(summary_markdown(results))
    return results
