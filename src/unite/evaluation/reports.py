"""Result records: library versions, JSON files, the markdown summary beside the paper, and run comparison."""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from unite.errors import ConfigError

__all__ = [
    "DEFAULT_RANKINGS_DEPTH",
    "RANKINGS_SUFFIX",
    "compare_results",
    "library_versions",
    "mmeb_aggregates",
    "read_result",
    "rankings_path",
    "summary_markdown",
    "write_rankings",
    "write_result",
]

#: A task's rankings are written beside its result as ``<task>.rankings.jsonl``.
RANKINGS_SUFFIX = ".rankings.jsonl"
#: Candidates kept per query in a rankings file unless asked otherwise.
DEFAULT_RANKINGS_DEPTH = 100
#: How a rankings file orders each query's candidates, recorded in the result.
RANKINGS_ORDER = (
    "score descending (cosine similarity of the L2-normalised embeddings); equal scores: not relevant before "
    "relevant (the metrics' pessimistic ties), then corpus or pool order"
)

_PACKAGES = ("unite-embed", "torch", "transformers", "tokenizers", "numpy", "pillow", "av", "safetensors")


def library_versions() -> dict[str, str | None]:
    """Python, platform, the libraries that shape embeddings, and the GPU when there is one."""
    import torch

    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["unite-embed"] is None:  # run from a source tree without installing
        from unite import __version__

        versions["unite-embed"] = __version__
    versions["cuda"] = torch.version.cuda
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return versions


def write_result(folder: str | Path, result: Mapping[str, Any]) -> Path:
    """Write ``folder/<task>.json`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['task']}.json"
    temporary = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(json.dumps(result, indent=2, default=str) + "\n")
    temporary.replace(path)
    return path


def rankings_path(folder: str | Path, task: str) -> Path:
    """Where the rankings of ``task`` go: ``folder/<task>.rankings.jsonl``, beside ``<task>.json``."""
    return Path(folder) / f"{task}{RANKINGS_SUFFIX}"


def write_rankings(path: str | Path, records: Iterable[Mapping[str, Any]], depth: int | None) -> dict[str, Any]:
    """Write one JSON line per ranked query atomically; returns what the result records about the file.

    Args:
        path: the rankings file.
        records: per query ``query_id``, ``candidates``, ``complete``, ``ranking`` and ``judged``.
        depth: the candidates kept per query (``None``: all).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    digest, queries = hashlib.sha256(), 0
    try:
        with temporary.open("wb") as handle:
            for record in records:
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                handle.write(line)
                queries += 1
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return {
        "file": path.name,
        "queries": queries,
        "depth": "all" if depth is None else depth,
        "order": RANKINGS_ORDER,
        "sha256": digest.hexdigest(),
    }


def read_result(path: str | Path) -> dict[str, Any]:
    """Read a result JSON written by :func:`write_result`.

    Raises:
        ConfigError: the file is missing or is not a result record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: result file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a result JSON ({error})") from None
    if not isinstance(data, dict) or "task" not in data or "metrics" not in data:
        raise ConfigError(f"{path}: not a unite eval result (expected the keys 'task' and 'metrics')")
    return data


def _percent(value: float | None, metric: str) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.1f}" if metric.endswith("rank") else f"{100 * value:.1f}"


def summary_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of every result, our main metric beside the paper's, plus MMEB averages when present."""
    models = list(dict.fromkeys(model for result in results for model in result.get("paper", {})))
    header = ["task", "metric", "ours", *[f"paper {model}" for model in models], "queries", "candidates"]
    header += ["skipped queries", "skipped candidates", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        metric = result.get("main_metric", "recall@1")
        notes = []
        if result.get("settings", {}).get("limit"):
            notes.append(f"limit {result['settings']['limit']}")
        deviations = result.get("protocol", {}).get("deviations", {})
        if deviations:
            notes.append(
                "deviates: " + ", ".join(f"{k}={v['used']} (paper {v['protocol']})" for k, v in deviations.items())
            )
        paper = result.get("paper", {})
        row = [
            result["task"],
            metric,
            _percent(result["metrics"].get(metric), metric),
            *[f"{paper[model]:.1f}" if model in paper else "" for model in models],
            *[str(value) for value in _scored_counts(result.get("counts", {}))],
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n\n" + SCORED_NOTE + "\n"
    aggregates = mmeb_aggregates(results)
    if aggregates:
        text += "\n" + _mmeb_table(aggregates)
    return text


#: Printed under the summary table.
SCORED_NOTE = (
    "Metrics are over the scored queries only: a query that could not be encoded, or whose every relevant "
    "candidate was skipped, is not scored, and a skipped candidate is left out of the search. Each task's JSON "
    "lists them under `skipped` with the reason."
)


def _scored_counts(counts: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(queries scored, candidates searched, queries skipped, candidates skipped); older results count no skips."""
    return (
        counts.get("queries_scored", counts.get("queries", "")),
        counts.get("candidates_searched", counts.get("candidates", "")),
        counts.get("queries_skipped", 0),
        counts.get("candidates_skipped", 0),
    )


def mmeb_aggregates(results: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, int, int]]:
    """MMEB averages of precision@1 (meta-tasks, IND, OOD, overall): name -> (percent, datasets run, of how many)."""
    from unite.evaluation.registry import GROUPS, REGISTRY

    by_name = {result["task"]: result for result in results}
    members = {
        "Overall": GROUPS["mmeb"],
        "Classification": GROUPS["mmeb-classification"],
        "VQA": GROUPS["mmeb-vqa"],
        "Retrieval": GROUPS["mmeb-retrieval"],
        "Grounding": GROUPS["mmeb-grounding"],
        "IND": GROUPS["mmeb-ind"],
        "OOD": GROUPS["mmeb-ood"],
    }
    out = {}
    for aggregate, names in members.items():
        values = [by_name[name]["metrics"][REGISTRY[name].main_metric] for name in names if name in by_name]
        if values:
            out[aggregate] = (100 * sum(values) / len(values), len(values), len(names))
    return out


def _mmeb_table(aggregates: Mapping[str, tuple[float, int, int]]) -> str:
    from unite.evaluation.registry import MMEB_AGGREGATES

    models = list(dict.fromkeys(model for numbers in MMEB_AGGREGATES.values() for model in numbers))
    header = ["MMEB (precision@1)", "ours", *[f"paper {model}" for model in models], "datasets"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, (value, count, total) in aggregates.items():
        paper = MMEB_AGGREGATES[name]
        cells = [f"{paper[model]:.1f}" if model in paper else "" for model in models]
        lines.append("| " + " | ".join([name, f"{value:.1f}", *cells, f"{count} of {total}"]) + " |")
    return "\n".join(lines) + "\n"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def compare_results(first: Mapping[str, Any], second: Mapping[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side: every metric with the difference, then the settings, checkpoint, versions and
    counts that differ (the date and cache bookkeeping left out)."""
    lines = [f"A: {names[0]} ({first['task']})", f"B: {names[1]} ({second['task']})", ""]
    lines += ["| metric | A | B | B - A |", "| --- | --- | --- | --- |"]
    for metric in dict.fromkeys([*first["metrics"], *second["metrics"]]):
        a, b = first["metrics"].get(metric), second["metrics"].get(metric)
        delta = "" if a is None or b is None else _signed(b - a, metric)
        lines.append(f"| {metric} | {_percent(a, metric)} | {_percent(b, metric)} | {delta} |")
    lines += ["", "| count | A | B |", "| --- | --- | --- |"]
    counted = zip(_scored_counts(first.get("counts", {})), _scored_counts(second.get("counts", {})))
    for label, (a, b) in zip(_COUNT_LABELS, counted):
        lines.append(f"| {label} | {a} | {b} |")
    differing = []
    for section in ("settings", "checkpoint", "versions", "counts", "protocol"):
        left, right = _flatten(first.get(section, {})), _flatten(second.get(section, {}))
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                differing.append(f"| {section}.{key} | {left.get(key, '-')} | {right.get(key, '-')} |")
    lines.append("")
    if differing:
        lines += ["Differences in how the runs were made:", "", "| field | A | B |", "| --- | --- | --- |", *differing]
    else:
        lines.append("The runs were made the same way (settings, checkpoint, versions and counts agree).")
    return "\n".join(lines) + "\n"


_COUNT_LABELS = ("queries scored", "candidates searched", "queries skipped", "candidates skipped")


def _signed(value: float, metric: str) -> str:
    return f"{value:+.1f}" if metric.endswith("rank") else f"{100 * value:+.1f}"
