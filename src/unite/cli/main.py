"""The ``unite`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from unite import __version__
from unite.cli import data, demo, doctor, encode, eval, export, index, search, serve, tools, train
from unite.errors import UniteError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unite",
        description="UNITE universal multimodal embeddings: text, images, videos and their mixtures in one space.",
    )
    parser.add_argument("--version", action="version", version=f"unite-embed {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (encode, demo, index, search, serve, tools, eval, train, data, doctor, export):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unite``; returns the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except UniteError as error:
        if args.debug:
            raise
        sys.stderr.write(f"unite: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("unite: interrupted\n")
        return 130
    except Exception as error:  # the last line of defence: one line, never a raw traceback
        if args.debug:
            raise
        sys.stderr.write(f"unite: internal error: {type(error).__name__}: {error} (rerun with --debug for details)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
