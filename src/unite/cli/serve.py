"""``unite serve``: the search API (/v1/embeddings, /search, /thumbnail, /healthz) and the web page at /."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from unite.errors import ConfigError

__all__ = ["add_parser"]

#: Connections (and requests in progress) uvicorn accepts at once before answering 503.
MAX_CONNECTIONS = 256

EPILOG = """\
Binds to 127.0.0.1 unless --host says otherwise, and answers only requests whose Host header names this machine
(localhost, 127.0.0.1, [::1], the --host address, and each --allowed-host), so that no web page can reach it by
DNS rebinding. Remote clients send media as uploads or base64; the server reads no path and fetches no URL for
them unless --allow-server-paths / --allow-urls say so. Thumbnails are served only for indexed items. Set an API
key with --api-key-env NAME (the key is read from that variable); it is checked before the body is read.

Every request is measured before anything is decoded: inputs, images and videos, text and visual tokens, body
size; beyond a limit the answer is 413 with a JSON error naming it. When too many inputs wait for the model the
answer is 503 with Retry-After. A build or sync of the index while the server runs is served within
--refresh-seconds.

/v1/embeddings also answers quantised embeddings (encoding_format int8, uint8, binary or ubinary, or a list
embedding_types); int8/uint8 use the ranges of --calibration, else those of an int8 index, else [-1, 1] per
dimension, and the answer's quantization.ranges says which.

examples:
  unite serve --index photos.index
  UNITE_API_KEY=secret unite serve --index photos.index --host 0.0.0.0 --allowed-host photos.example.org \\
      --api-key-env UNITE_API_KEY
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
    parser.add_argument(
        "--model", help="the index's model, moved to this folder (its weights must match the index's fingerprint)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default %(default)s")
    parser.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, else fp32")
    parser.add_argument(
        "--calibration", type=Path, metavar="FILE",
        help="int8/uint8 ranges for /v1/embeddings: OUT.calibration.npz (or .json) from unite encode, or a .npy of "
        "calibration embeddings (default: the index's ranges when it stores int8 vectors, else [-1, 1] per dimension)",
    )
    _add_safety(parser.add_argument_group("safety"), defaults)
    _add_limits(parser.add_argument_group("work budget per request"), defaults)
    perf = parser.add_argument_group("batching and freshness")
    perf.add_argument("--max-batch", type=int, default=defaults.max_batch, help="default %(default)s")
    perf.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms, help="default %(default)g")
    perf.add_argument(
        "--max-queue", type=int, default=defaults.max_queue,
        help="most inputs waiting for the model; beyond it 503 with Retry-After (default %(default)s)",
    )
    perf.add_argument(
        "--refresh-seconds", type=float, default=defaults.refresh_interval_s,
        help="how often to look for a newer version of the index (default %(default)g)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def _add_safety(safety: argparse._ArgumentGroup, defaults: Any) -> None:
    safety.add_argument("--api-key-env", metavar="NAME", help="require the API key held in this environment variable")
    safety.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="also answer requests for this Host name (repeatable; '*' answers any, which allows DNS rebinding)",
    )
    safety.add_argument(
        "--max-connections", type=int, default=MAX_CONNECTIONS,
        help="open connections and requests at once; beyond it 503 (default %(default)s)",
    )
    safety.add_argument("--allow-server-paths", action="store_true", help="let clients name files on this machine")
    safety.add_argument(
        "--allow-urls", action="store_true", help="let clients give http(s) URLs for the server to fetch"
    )


def _add_limits(limits: argparse._ArgumentGroup, defaults: Any) -> None:
    numbers = (
        ("--max-request-mb", float, defaults.max_request_bytes / 2**20, "largest request body in MiB"),
        ("--max-inflight-mb", float, defaults.max_inflight_bytes / 2**20, "request bodies held at once, in MiB"),
        ("--body-timeout", float, defaults.body_timeout_s, "seconds a client may take to send its body"),
        ("--max-items", int, defaults.max_items, "inputs per request"),
        ("--max-text-chars", int, defaults.max_text_chars, "characters of one text"),
        ("--max-text-tokens", int, defaults.max_text_tokens, "text tokens per request"),
        ("--max-media-per-input", int, defaults.max_media_per_input, "images and videos per input"),
        ("--max-media-per-request", int, defaults.max_media_per_request, "images and videos per request"),
        ("--max-visual-tokens", int, defaults.max_visual_tokens, "visual tokens per request"),
        ("--max-video-seconds", float, defaults.max_video_seconds, "longest uploaded video in seconds"),
        ("--max-k", int, defaults.max_k, "most search results"),
        ("--request-timeout", float, defaults.request_timeout_s, "seconds one request may take, else 503"),
    )
    for flag, kind, default, text in numbers:
        limits.add_argument(flag, type=kind, default=default, help=f"{text} (default %(default)g)")


def server_config(args: argparse.Namespace, api_key: str | None) -> Any:
    """The server settings the flags ask for; every number must be positive."""
    from unite.server import ServerConfig

    numbers = {
        "max_items": args.max_items,
        "max_text_chars": args.max_text_chars,
        "max_text_tokens": args.max_text_tokens,
        "max_media_per_input": args.max_media_per_input,
        "max_media_per_request": args.max_media_per_request,
        "max_visual_tokens": args.max_visual_tokens,
        "max_video_seconds": args.max_video_seconds,
        "max_k": args.max_k,
        "request_timeout_s": args.request_timeout,
        "body_timeout_s": args.body_timeout,
        "max_batch": args.max_batch,
        "max_queue": args.max_queue,
        "refresh_interval_s": args.refresh_seconds,
        "max_request_bytes": int(args.max_request_mb * 2**20),
        "max_inflight_bytes": int(args.max_inflight_mb * 2**20),
    }
    for name, value in numbers.items():
        if not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if numbers["max_inflight_bytes"] < numbers["max_request_bytes"]:
        raise ConfigError("--max-inflight-mb must be at least --max-request-mb")
    return ServerConfig(
        api_key=api_key,
        allowed_hosts=tuple(args.allowed_host) + _bind_host(args.host),
        allow_server_paths=args.allow_server_paths,
        allow_urls=args.allow_urls,
        batch_wait_ms=args.batch_wait_ms,
        **numbers,
    )


def _bind_host(host: str) -> tuple[str, ...]:
    """A specific bind address is a name clients may use; the wildcard addresses are not."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return (host,)
    return () if address.is_unspecified else (str(address),)


def _calibration(path: Path | None, manifest: Any) -> Any:
    """The int8/uint8 ranges of /v1/embeddings: ``--calibration``, else the index's, else ``None`` ([-1, 1])."""
    from unite.quantization import Calibration

    if path is not None:
        return Calibration.load(path)
    recorded = getattr(manifest, "calibration", None)
    return Calibration.from_dict(recorded, "index manifest: calibration") if recorded else None


def exposure_warning(host: str, api_key: str | None, allowed_hosts: list[str]) -> str | None:
    """The warning printed when the server listens beyond this machine without a key, or for any Host."""
    warnings = []
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and api_key is None:
        warnings.append(
            f"listening on {host} without an API key: anyone who can reach this port can embed with your model "
            "and read your index (set --api-key-env NAME)"
        )
    if "*" in allowed_hosts:
        warnings.append("--allowed-host '*' answers any Host header, so web pages can reach it by DNS rebinding")
    return "; ".join(warnings) or None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("unite serve needs FastAPI and uvicorn: pip install 'unite-embed[serve,index]'") from None
    from unite.cli.search import encoder_for_index
    from unite.index import open_store, read_manifest
    from unite.server import create_app
    from unite.server.embeddings import set_calibration

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    config = server_config(args, api_key)
    manifest = read_manifest(args.index)
    calibration = _calibration(args.calibration, manifest)
    encoder = encoder_for_index(
        manifest, model=args.model, device=args.device, dtype=args.dtype, allow_remote=args.allow_urls or None
    )
    if calibration is not None and calibration.dim != encoder.embedding_dim:
        raise ConfigError(
            f"--calibration {args.calibration}: ranges for {calibration.dim} dimensions, the model gives "
            f"{encoder.embedding_dim}"
        )
    store = open_store(args.index, api_key=os.environ.get("QDRANT_API_KEY"))
    app = create_app(store, encoder, config)  # clients see the model folder name, never a server path
    set_calibration(app, calibration)
    warning = exposure_warning(args.host, api_key, args.allowed_host)
    if warning:
        sys.stderr.write(f"unite: warning: {warning}\n")
    sys.stderr.write(f"unite: serving {args.index} ({store.count()} items) on http://{args.host}:{args.port}/\n")
    if args.max_connections < 1:
        raise ConfigError(f"--max-connections must be positive, got {args.max_connections}")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, limit_concurrency=args.max_connections
    )
    store.close()
    return 0
