"""``unite data check``: validate training data before a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="inspect training data", description="Inspect training data.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate training files: schema, media, token lengths, modality mix, memory estimate",
        description=(
            "Parse every record, decode every image and video, count text and visual tokens per side, report the "
            "target-modality mix and a rough peak-memory estimate. Exits 1 when any record is bad."
        ),
    )
    check.add_argument("files", nargs="+", help="UNITE pair or MMEB-train files (JSON or JSON lines)")
    check.add_argument("--media-root", type=Path, help="folder of relative media paths (default: each file's folder)")
    check.add_argument("--model", required=True, help="checkpoint folder or Hub id: its tokenizer and config are used")
    check.add_argument("--batch-size", type=int, default=64, help="pairs per device for the memory estimate")
    check.add_argument("--video-max-frames", type=int, default=12, help="frames per video (training default 12)")
    check.add_argument("--video-max-pixels", type=int, default=240 * 320, help="video frame pixel bound")
    check.add_argument("--image-max-pixels", type=int, help="processor upper pixel bound")
    check.add_argument("--limit", type=int, help="decode only the first N records of each file")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer, Qwen2VLConfig

    from unite.data.collator import ItemProcessor
    from unite.models.loading import resolve_checkpoint
    from unite.settings import EncodingSettings
    from unite.training.check import check_dataset

    folder = resolve_checkpoint(args.model)
    settings = EncodingSettings().replace(
        video_max_frames=args.video_max_frames,
        video_min_frames=min(4, args.video_max_frames),
        video_max_pixels=args.video_max_pixels,
        image_max_pixels=args.image_max_pixels,
        truncation="left",
        max_length=2048,
    )
    processor = ItemProcessor(AutoTokenizer.from_pretrained(folder), settings)
    report = check_dataset(
        args.files,
        processor,
        args.media_root,
        limit=args.limit,
        config=Qwen2VLConfig.from_pretrained(folder),
        batch_size=args.batch_size,
    )
    out = sys.stdout
    if args.json:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        out.write(f"records: {report.records} ({', '.join(f'{k} {v}' for k, v in report.per_source.items())})\n")
        out.write(
            "target modality: " + ", ".join(f"{k} {v:.1%}" for k, v in report.target_modality_share.items()) + "\n"
        )
        for name, stats in report.tokens.items():
            out.write(f"{name:<20} " + "  ".join(f"{k} {v:g}" for k, v in stats.items()) + "\n")
        memory = report.memory_gib
        if memory:
            out.write(
                f"estimated peak memory per device at batch {memory['batch_size']}: {memory['total']:.1f} GiB "
                f"(weights {memory['weights']:.1f}, activations {memory['activations']:.1f}; rough, see docs)\n"
            )
        out.write(f"bad records: {len(report.errors)}\n")
        for entry in report.errors[:20]:
            out.write(f"  {entry.get('record')}: {entry['error']}\n")
    return 1 if report.errors else 0
