"""``unite eval``: evaluate a checkpoint on tasks, write one JSON per task and a markdown summary."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from unite.cli.options import add_model_options, encoder_from_args, setting_overrides
from unite.errors import ConfigError
from unite.evaluation.reports import DEFAULT_RANKINGS_DEPTH
from unite.models.encoder import DEFAULT_BATCH_SIZE

__all__ = ["add_parser", "run"]

CACHE_ENV = "UNITE_CACHE"

EPILOG = """\
TASK is a task.yaml (the generic format: queries.jsonl, corpus.jsonl and qrels.tsv beside it), a registered
benchmark (e.g. MSRVTT-1K-A-T2V, MMEB-ImageNet-1K, WebVid-CoVR) or a group (mmeb, mmeb-ind, mmeb-ood,
mmeb-classification, mmeb-vqa, mmeb-retrieval, mmeb-grounding, fine-grained, coarse, paper); --list-tasks shows
them. Registered benchmarks read their public files under DATA_ROOT (--data-root or $UNITE_EVAL_DATA), in the
layouts their downloads produce; `unite eval layout TASK` prints the paths tried and where to download them.

Each task's encoding settings (e.g. 48 frames for MSR-VTT) apply unless a media option is given explicitly;
then the option wins and the result records the deviation. Embeddings are cached by content (item, weights,
settings) under --cache-dir: a rerun encodes nothing and an interrupted run resumes.

An item that cannot be read or encoded never ends a run: it is skipped and never cached (a rerun tries it again),
a skipped candidate leaves the search, and a query that failed or lost every relevant candidate is not scored.
The metrics are over the scored queries; each result lists what was skipped and why, summary.md and --compare
show the counts. A missing media file stops the run before the model loads, unless the task spec says
options: {missing_media: drop}. --save-rankings writes DIR/<task>.rankings.jsonl, from which every metric can be
recomputed (docs/evaluation.md).

examples:
  unite eval --model friedrichor/Unite-Base-Qwen2-VL-2B --task MSRVTT-1K-A-T2V --data-root /data --output-dir runs/2b
  unite eval --model ./ckpt --task my_task/task.yaml --output-dir runs/mine --limit 100
  unite eval --model ./ckpt --task my_task/task.yaml --output-dir runs/mine --save-rankings --rankings-depth all
  unite eval --compare runs/2b/MSRVTT-1K-A-T2V.json runs/mine/MSRVTT-1K-A-T2V.json
  unite eval layout MSRVTT-1K-A-T2V
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a checkpoint on retrieval tasks and the paper's benchmarks",
        description="Evaluate a UNITE checkpoint on tasks; write DIR/<task>.json and DIR/summary.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action", nargs="?", choices=["layout"], help="layout TASK...: print the files each task expects and where "
        "to download them, then exit"
    )
    parser.add_argument("layout_tasks", nargs="*", metavar="TASK", help=argparse.SUPPRESS)
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument(
        "--task", action="append", default=[], metavar="TASK", help="task.yaml, registered name or group (repeatable)"
    )
    tasks.add_argument("--output-dir", type=Path, metavar="DIR", help="where results and summary.md are written")
    tasks.add_argument("--data-root", type=Path, help="data root of registered benchmarks (default $UNITE_EVAL_DATA)")
    tasks.add_argument("--limit", type=int, help="evaluate the first N queries only (smoke test; not comparable)")
    tasks.add_argument("--list-tasks", action="store_true", help="list registered tasks and groups, then exit")
    tasks.add_argument(
        "--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="show two results side by side, then exit"
    )
    add_model_options(parser)
    for action in parser._actions:  # --model is needed to evaluate, not to list or compare
        if action.dest == "model":
            action.required = False
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="most items per batch (default %(default)s)"
    )
    run_group.add_argument("--cache-dir", type=Path, help="embedding cache (default $UNITE_CACHE, else DIR/cache)")
    run_group.add_argument("--no-cache", action="store_true", help="keep embeddings in memory only")
    run_group.add_argument("--query-instruction", help="replace every task's query instruction")
    run_group.add_argument("--document-instruction", help="replace every task's candidate instruction")
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run_group.add_argument(
        "--save-rankings",
        action="store_true",
        help="write DIR/<task>.rankings.jsonl: per scored query its ranked candidates with scores and its judgements",
    )
    run_group.add_argument(
        "--rankings-depth",
        type=_depth,
        default=DEFAULT_RANKINGS_DEPTH,
        metavar="N|all",
        help="candidates kept per query in the rankings (default %(default)s; at least the largest metric cutoff, "
        "always down to the first relevant one)",
    )
    parser.set_defaults(run=run)


def _depth(value: str) -> int | None:
    """``--rankings-depth``: a positive count, or ``all``."""
    if value == "all":
        return None
    try:
        depth = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'all', got {value!r}") from None
    if depth < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'all', got {value!r}")
    return depth


def run(args: argparse.Namespace) -> int:
    from unite.evaluation import harness, registry, reports
    from unite.evaluation.runner import EvalConfig

    if args.compare:
        first, second = (reports.read_result(path) for path in args.compare)
        sys.stdout.write(reports.compare_results(first, second, names=(str(args.compare[0]), str(args.compare[1]))))
        return 0
    if args.list_tasks:
        sys.stdout.write(_task_list(registry))
        return 0
    if args.action == "layout":
        return _layout(args.layout_tasks or args.task, registry)
    missing = [
        flag
        for flag, value in (("--model", args.model), ("--task", args.task), ("--output-dir", args.output_dir))
        if not value
    ]
    if missing:
        raise ConfigError(f"unite eval needs {', '.join(missing)} (or --compare A.json B.json, or --list-tasks)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    loaded = harness.load_tasks(args.task, args.data_root)
    cache_dir = None if args.no_cache else (args.cache_dir or _env_path(CACHE_ENV) or args.output_dir / "cache")
    config = EvalConfig(
        batch_size=args.batch_size,
        limit=args.limit,
        cache_dir=cache_dir,
        setting_overrides=setting_overrides(args),
        query_instruction=args.query_instruction,
        document_instruction=args.document_instruction,
        show_progress=not args.no_progress,
        revision=args.revision,
        save_rankings=args.save_rankings,
        rankings_depth=args.rankings_depth,
    )
    _join_torchrun(args)
    encoder = encoder_from_args(args)
    results = harness.evaluate(encoder, loaded, output_dir=args.output_dir, config=config)
    _leave_torchrun()
    if results:
        sys.stdout.write(reports.summary_markdown(results))
        sys.stderr.write(f"unite: wrote {len(results)} result(s) and summary.md to {args.output_dir}\n")
    return 0


def _join_torchrun(args: argparse.Namespace) -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1), join the process group so that ranks share the encoding."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available() and args.device in (None, "cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def _leave_torchrun() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _layout(names: list[str], registry: object) -> int:
    from unite.evaluation.locate import describe_layout
    from unite.evaluation.tasks import load_task_spec

    if not names:
        raise ConfigError("unite eval layout needs a task name (or a task.yaml, or a group); see --list-tasks")
    for name in names:
        if str(name).endswith((".yaml", ".yml")):
            specs = [load_task_spec(name)[0]]
        else:
            specs = registry.resolve_task_names(name)  # type: ignore[attr-defined]
        for spec in specs:
            sys.stdout.write(describe_layout(spec) + "\n")
    return 0


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _task_list(registry: object) -> str:
    lines = ["| task | group | metric | settings | paper |", "| --- | --- | --- | --- | --- |"]
    for name, spec in registry.REGISTRY.items():  # type: ignore[attr-defined]
        settings = ", ".join(f"{key}={value}" for key, value in spec.settings.items())
        paper = ", ".join(f"{model} {value}" for model, value in spec.paper.items())
        lines.append(f"| {name} | {spec.group} | {spec.main_metric} | {settings} | {paper} |")
    groups = [f"- {group}: {len(members)} tasks" for group, members in registry.GROUPS.items()]  # type: ignore[attr-defined]
    return "\n".join([*lines, "", "groups:", *groups]) + "\n"
