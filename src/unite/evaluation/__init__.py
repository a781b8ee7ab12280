"""Evaluation harness: tasks as data, loaders per public layout, pure metrics, cached runs, reports.

See docs/evaluation.md. ``unite eval`` is the command-line front end.
"""

from unite.evaluation.harness import DATA_ROOT_ENV, evaluate, load_tasks, resolve_tasks
from unite.evaluation.loaders import Entry, TaskData, load_task_data
from unite.evaluation.metrics import DEFAULT_METRICS, aggregate, query_metrics
from unite.evaluation.registry import GROUPS, REGISTRY, get_task
from unite.evaluation.reports import compare_results, read_result, summary_markdown
from unite.evaluation.runner import EvalConfig, evaluate_task
from unite.evaluation.tasks import Direction, Layout, TaskSpec, load_task_spec

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_METRICS",
    "GROUPS",
    "REGISTRY",
    "Direction",
    "Entry",
    "EvalConfig",
    "Layout",
    "TaskData",
    "TaskSpec",
    "aggregate",
    "compare_results",
    "evaluate",
    "evaluate_task",
    "get_task",
    "load_task_data",
    "load_task_spec",
    "load_tasks",
    "query_metrics",
    "read_result",
    "resolve_tasks",
    "summary_markdown",
]
