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


def _serve(args: argparse.Namespace) -> int:
    from detseg.serving.batching import BatchingOptions
    from detseg.workflows.serve import model_entries, served_versions, start_server

    batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros,
                               args.num_batch_threads) if args.enable_batching else None
    entries = model_entries(args.model_base_path, args.model_name, args.model_config_file)
    server = start_server(models=entries, host=args.host,
                          rest_api_port=_port(args.rest_api_port, "--rest_api_port"), grpc_port=_port(args.port, "--port"), batching=batching,
                          poll_interval_s=args.file_system_poll_wait_seconds,
                          max_request_bytes=args.max_request_bytes, max_lifetime_s=args.max_lifetime_s)
    for entry in entries:
        print(f"model {entry.name}: {entry.base_path} versions "
              f"{served_versions(server, entry.name) or 'none yet'}", flush=True)
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


def _port(port: int, flag: str) -> int | None:
    """TF Serving's flag convention: 0 turns that API off (the library's None)."""
    if port < 0:
        raise ValueError(f"{flag} must be >= 0 (0 turns that API off)")
    return port or None
