"""`detseg serve`: the embedded TF-Serving-compatible server (REST and gRPC) for SavedModels.

Flags follow `tensorflow_model_server`: `--model_name/--model_base_path` or
`--model_config_file`, `--port` (gRPC), `--rest_api_port`, `--enable_batching` with
`--max_batch_size/--batch_timeout_micros/--num_batch_threads`, and
`--file_system_poll_wait_seconds`. A port of 0 turns that API off, as in TF Serving.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve exported SavedModels over TF Serving's REST and gRPC APIs",
        description="Serve numbered SavedModel versions under a base path, the way TensorFlow Serving "
                    "does: new versions are picked up as they appear; the latest is served.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_base_path", type=Path, help="folder holding numbered versions (1/, 2/, ...)")
    source.add_argument("--model_config_file", type=Path, help="TF Serving models.config (text ModelServerConfig)")
    p.add_argument("--model_name", default=None, help="name clients use (default: the base path's folder name)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 = no REST API)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = no gRPC API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 = all)")
    p.add_argument("--enable_batching", action="store_true", help="merge concurrent requests into batches")
    p.add_argument("--max_batch_size", type=int, default=8)
    p.add_argument("--batch_timeout_micros", type=int, default=2000)
    p.add_argument("--num_batch_threads", type=int, default=2)
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new versions (0 = load once)")
    p.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024,
                   help="largest request body accepted (REST answers 413 above it)")
    p.add_argument("--max_lifetime_s", type=float, default=None, help="stop by itself after this many seconds")
    p.set_defaults(func=_serve)


def _model_entries(args: argparse.Namespace) -> list:
    from detseg.serving.model_config import ModelEntry, read_model_config

    if args.model_config_file is not None:
        if args.model_name:
            raise ValueError("--model_name goes with --model_base_path; models.config names its models")
        return read_model_config(args.model_config_file)
    base = args.model_base_path.resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"--model_base_path {args.model_base_path}: no such folder")
    return [ModelEntry(args.model_name or base.name, base)]


def _server_options(args: argparse.Namespace):
    from detseg.serving.batching import BatchingOptions
    from detseg.serving.server import ServerOptions

    if args.port < 0 or args.rest_api_port < 0:
        raise ValueError("ports must be >= 0 (0 turns that API off)")
    batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros,
                               args.num_batch_threads) if args.enable_batching else None
    return ServerOptions(host=args.host, port=args.port or None, rest_api_port=args.rest_api_port or None,
                         poll_interval_s=args.file_system_poll_wait_seconds, batching=batching,
                         max_body_bytes=args.max_request_bytes, max_lifetime_s=args.max_lifetime_s)


def _serve(args: argparse.Namespace) -> int:
    from detseg.serving.server import ModelServer

    entries = _model_entries(args)
    server = ModelServer(entries, _server_options(args)).start()
    for entry in entries:
        versions = sorted(server.registry.version_statuses(entry.name)) if _has_versions(server, entry.name) else []
        print(f"model {entry.name}: {entry.base_path} versions {versions or 'none yet'}", flush=True)
    print(f"REST: {server.rest_url or 'off'}  gRPC: {server.grpc_target or 'off'}  "
          f"batching: {'on' if args.enable_batching else 'off'}", flush=True)
    # SIGTERM (docker stop, a test's terminate()) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return 0


def _has_versions(server, name: str) -> bool:
    try:
        server.registry.version_statuses(name)
        return True
    except ValueError:
        return False
