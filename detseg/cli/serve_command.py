"""`detseg serve`: the embedded TF-Serving-compatible server (REST and gRPC) for SavedModels.

Flags follow `tensorflow_model_server` (its underscore spelling works, detseg's help shows
dashes): `--model-name/--model-base-path` or `--model-config-file`, `--port` (gRPC),
`--rest-api-port`, `--enable-batching` with `--max-batch-size/--batch-timeout-micros/
--num-batch-threads`, and `--file-system-poll-wait-seconds`. A port of 0 turns that API
off, as in TF Serving. Paths, ports and numbers are checked before TensorFlow is imported,
and so is a models.config.
"""

from __future__ import annotations

import argparse
import signal
import sys

from detseg.cli.arguments import existing_file, existing_folder, float_above, float_at_least, int_at_least, int_between
from detseg.workflows.serve import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT  # loads no TensorFlow

PORT = int_between(0, 65535)  # 0 turns that API off, as in TF Serving


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve exported SavedModels over TF Serving's REST and gRPC APIs",
        description="Serve numbered SavedModel versions under a base path, the way TensorFlow Serving "
                    "does: new versions are picked up as they appear; the latest is served. Flags take "
                    "TF Serving's spelling (--model_base_path) or detseg's (--model-base-path).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-base-path", type=existing_folder,
                        help="folder holding numbered versions (1/, 2/, ...)")
    source.add_argument("--model-config-file", type=existing_file,
                        help="TF Serving models.config (text ModelServerConfig)")
    p.add_argument("--model-name", default=None, help="name clients use (default: the base path's folder name)")
    p.add_argument("--rest-api-port", type=PORT, default=DEFAULT_REST_PORT, help="REST port (0 = no REST API)")
    p.add_argument("--port", type=PORT, default=DEFAULT_GRPC_PORT, help="gRPC port (0 = no gRPC API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 = all interfaces)")
    p.add_argument("--enable-batching", action="store_true", help="merge concurrent requests into batches")
    p.add_argument("--max-batch-size", type=int_at_least(1), default=8,
                   help="most requests merged into one batch (with --enable-batching)")
    p.add_argument("--batch-timeout-micros", type=int_at_least(0), default=2000,
                   help="how long a batch waits for more requests, in microseconds (with --enable-batching)")
    p.add_argument("--num-batch-threads", type=int_at_least(1), default=2,
                   help="batches run at the same time (with --enable-batching)")
    p.add_argument("--file-system-poll-wait-seconds", type=float_at_least(0.0), default=1.0,
                   help="how often to look for new versions (0 = load once)")
    p.add_argument("--max-request-bytes", type=int_at_least(1), default=64 * 1024 * 1024,
                   help="largest request body accepted (REST answers 413 above it)")
    p.add_argument("--max-lifetime-s", type=float_above(0.0), default=None,
                   help="stop by itself after this many seconds (default: run until stopped)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from detseg.serving.batching import BatchingOptions
    from detseg.workflows.serve import model_entries, served_versions, start_server

    if args.model_name and args.model_config_file:
        raise ValueError("--model-name goes with --model-base-path; a models.config names its models")
    batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros,
                               args.num_batch_threads) if args.enable_batching else None
    entries = model_entries(args.model_base_path, args.model_name, args.model_config_file)  # before TensorFlow
    server = start_server(models=entries, host=args.host,
                          rest_api_port=args.rest_api_port or None, grpc_port=args.port or None, batching=batching,
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

