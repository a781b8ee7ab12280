"""``unite doctor``: one line per check of the installation, devices, video decoding, a checkpoint and the Hub."""

from __future__ import annotations

import argparse
import json
import sys

from unite.doctor import HUB_TIMEOUT

__all__ = ["add_parser"]

EPILOG = """\
Each line reads `STATUS  CHECK: what was found[: the fix]`, STATUS being ok, info, warning or error. The exit
status is 1 when any check is an error, else 0. --model checks a checkpoint folder (or a Hugging Face id already
in the local cache; nothing is downloaded) without loading its weights: every tensor name and shape against the
model's, the weight layout, the tokenizer's special tokens, the weights fingerprint and the encoding settings it
would use. The Hub check waits at most --hub-timeout seconds and is skipped when HF_HUB_OFFLINE=1.

examples:
  unite doctor
  unite doctor --model friedrichor/Unite-Base-Qwen2-VL-2B
  unite doctor --model runs/unite-2b-stage1 --json
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check the installation, devices, video decoding, a checkpoint and the Hub",
        description="Check what unite needs, one line per check, with the fix for anything that is off.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="PATH_OR_NAME", help="also check this checkpoint folder or Hub id")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument(
        "--hub-timeout",
        type=float,
        default=HUB_TIMEOUT,
        metavar="SECONDS",
        help="wait this long for the Hub (default %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unite.doctor import Status, has_errors, run_checks

    checks = run_checks(model=args.model, hub_timeout=args.hub_timeout)
    if args.json:
        counts = {status.value: sum(check.status is status for check in checks) for status in Status}
        report = {"ok": not has_errors(checks), "counts": counts, "checks": [check.to_dict() for check in checks]}
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write("".join(check.line() + "\n" for check in checks))
    return 1 if has_errors(checks) else 0
