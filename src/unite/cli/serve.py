"""``unite serve``: the search API (/v1/embeddings, /search, /thumbnail, /healthz) and the web page at /."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from unite.errors import ConfigError

__all__ = ["add_parser"]

EPILOG = """\
Binds to 127.0.0.1 unless --host says otherwise. Remote clients send media as uploads or base64; the server
reads no path and fetches no URL for them unless --allow-server-paths / --allow-urls say so. Thumbnails are
served only for indexed items. Set an API key with --api-key-env NAME (the key is read from that variable).

examples:
  unite serve --index photos.index
  UNITE_API_KEY=secret unite serve --index photos.index --host 0.0.0.0 --api-key-env UNITE_API_KEY
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    from unite.server.config import ServerConfig

    defaults = ServerConfig()
    parser = commands.add_parser(
        "serve",
        help="serve an index: embeddings API, search API and a web page",
        description="Serve an index over HTTP (FastAPI + uvicorn) with a search page at /.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", required=True, type=Path, help="index folder")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default %(default)s")
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, else fp32")
    safety = parser.add_argument_group("safety and limits")
    safety.add_argument("--api-key-env", metavar="NAME", help="require the API key held in this environment variable")
    safety.add_argument(
        "--max-request-mb", type=float, default=defaults.max_request_bytes / 2**20, help="default %(default)g"
    )
    safety.add_argument("--max-items", type=int, default=defaults.max_items, help="inputs per request (default 64)")
    safety.add_argument(
        "--max-video-seconds", type=float, default=defaults.max_video_seconds, help="default %(default)g"
    )
    safety.add_argument("--allow-server-paths", action="store_true", help="let clients name files on this machine")
    safety.add_argument(
        "--allow-urls", action="store_true", help="let clients give http(s) URLs for the server to fetch"
    )
    perf = parser.add_argument_group("batching")
    perf.add_argument("--max-batch", type=int, default=defaults.max_batch, help="default %(default)s")
    perf.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms, help="default %(default)g")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("unite serve needs FastAPI and uvicorn: pip install 'unite-embed[serve,index]'") from None
    from unite.cli.search import encoder_for_index
    from unite.index import open_store, read_manifest
    from unite.server import ServerConfig, create_app

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    config = ServerConfig(
        api_key=api_key,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_items=args.max_items,
        max_video_seconds=args.max_video_seconds,
        allow_server_paths=args.allow_server_paths,
        allow_urls=args.allow_urls,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
    )
    manifest = read_manifest(args.index)
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    encoder = encoder_for_index(manifest, device=args.device, dtype=args.dtype, allow_remote=args.allow_urls or None)
    app = create_app(store, encoder, config)  # clients see the model folder name, never a server path
    sys.stderr.write(f"unite: serving {args.index} ({store.count()} items) on http://{args.host}:{args.port}/\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    store.close()
    return 0
