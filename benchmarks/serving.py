"""What serving costs: REST round trip vs in-process call, and batching under 8 clients.

Measures, in one run, on one exported detector (decoding, letterbox, model, NMS and
mapping back to original pixels all in the SavedModel):
1. latency at batch 1 of the SavedModel called in-process (`signatures["serving_default"]`),
2. latency at batch 1 of the same model through `detseg serve` over REST (and gRPC),
   and the REST / in-process overhead ratio,
3. the ceiling: the same SavedModel's in-process throughput (images/s) on batches of 16 of
   the same JPEGs,
4. throughput (images/s) with 8 concurrent clients sending one image per request, over
   REST with the server's batching off and on, and over gRPC with batching on; each as a
   fraction of the ceiling.
With `--sweep`, step 4 runs for every combination of `--sweep-max-batch-sizes`,
`--sweep-timeouts-micros` and `--sweep-threads` (batching on, REST) and prints a table:
how the defaults of `detseg serve --enable_batching` were chosen.

    .venv/bin/python benchmarks/serving.py                     # ~4-5 minutes on 2 cores
    .venv/bin/python benchmarks/serving.py --sweep --rounds 2  # + the batching-settings table
    .venv/bin/python benchmarks/serving.py --model conv --requests 20   # no models/ dependency

On a machine shared with other jobs, timings drift: the in-process and REST/gRPC calls are
therefore interleaved call by call, and the batching-off and batching-on servers run side
by side and take turns in short rounds, so both sides of each ratio see the same load.

The model is the project's YOLO detector (`models.yolo_detector`, tiny backbone, untrained:
timing only) at `--image-size`, or with `--model conv` a few convolutions with fixed boxes.
The server runs as its own process (`python -m detseg serve`), so clients and server do
not share a GIL. Images are 640 x 480 JPEGs, decoded in the graph. Medians are reported.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import io  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from detseg.serving.batching import BatchingOptions  # noqa: E402
from detseg.serving.client import ServingClient  # noqa: E402
from detseg.serving.export import export_saved_model  # noqa: E402
from detseg.serving.serving_module import ServingModule  # noqa: E402

MODEL_NAME = "bench"
CLASS_NAMES = ["circle", "square", "triangle"]


def build_module(kind: str, image_size: int) -> ServingModule:
    if kind == "yolo":
        from detseg.models.backbones.registry import build_backbone
        from detseg.models.yolo.detector import build_yolo_detector

        model = build_yolo_detector(build_backbone("tiny", (image_size, image_size)), num_classes=len(CLASS_NAMES))
        return ServingModule(model.detect, task="detection", letterbox=image_size, label_names=CLASS_NAMES,
                             trackables=[model])
    import keras

    pixels = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(pixels)
    for filters in (16, 32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(10, activation="sigmoid")(features)
    boxes = keras.layers.Lambda(lambda s: keras.ops.stack([s * 10, s * 10, s * 10 + 50, s * 10 + 50], -1))(scores)
    classes = keras.layers.Lambda(lambda s: keras.ops.cast(s > 0.5, "int32"))(scores)
    model = keras.Model(pixels, {"boxes": boxes, "scores": scores, "classes": classes})
    return ServingModule(model, task="detection", letterbox=image_size, label_names=CLASS_NAMES)


def jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    coarse = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def paired_latency_ms(calls: dict[str, Callable[[], Any]], iterations: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of each call, the calls interleaved so they share the machine's load."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m detseg serve` on free ports, until `stop()`."""

    def __init__(self, base_path: Path, batching: bool, args: argparse.Namespace):
        self.rest_port, self.grpc_port = free_port(), free_port()
        command = [sys.executable, "-m", "detseg", "serve", "--model_base_path", str(base_path),
                   "--model_name", MODEL_NAME, "--rest_api_port", str(self.rest_port),
                   "--port", str(self.grpc_port), "--max_lifetime_s", "1800"]
        if batching:
            command += ["--enable_batching", "--max_batch_size", str(args.max_batch_size),
                        "--batch_timeout_micros", str(args.batch_timeout_micros),
                        "--num_batch_threads", str(args.num_batch_threads)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=ROOT)
        lines = []
        while not any(line.startswith("REST:") for line in lines):
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("detseg serve exited:\n" + "".join(lines))
            lines.append(line)
        # Keep reading its output: a full pipe would block the server.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def timed_requests(address: str, images: list[bytes], clients: int, requests_per_client: int) -> float:
    """Seconds for `clients` threads to send `requests_per_client` one-image requests each."""
    barrier = threading.Barrier(clients + 1)
    errors: list = []

    def client_loop(index: int) -> None:
        client = ServingClient(address, MODEL_NAME)
        client.predict([images[index % len(images)]])  # warm the connection
        barrier.wait()
        try:
            for r in range(requests_per_client):
                client.predict([images[(index + r) % len(images)]])
        except Exception as error:  # reported after the run
            errors.append(error)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client requests failed, first: {errors[0]}")
    return time.perf_counter() - start


def in_process_throughput(signature: Callable[..., Any], images: list[bytes], batch: int, iterations: int) -> float:
    """Images/s of the SavedModel's `serving_default` called in-process on batches of `batch` JPEGs."""
    batch_images = tf.constant([images[i % len(images)] for i in range(batch)])
    seconds = paired_latency_ms({"batch": lambda: signature(images=batch_images)}, iterations)["batch"] / 1000
    return batch / seconds


def alternating_throughput(addresses: dict[str, str], images: list[bytes], clients: int, requests: int,
                           rounds: int) -> dict[str, float]:
    """Images/s per server, the servers taking turns in `rounds` short rounds."""
    per_round = max(1, requests // rounds)
    seconds = {name: 0.0 for name in addresses}
    for _ in range(rounds):
        for name, address in addresses.items():
            seconds[name] += timed_requests(address, images, clients, per_round)
    return {name: clients * per_round * rounds / total for name, total in seconds.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["yolo", "conv"], default="yolo")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=30, help="timed calls per latency measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="requests per client in the throughput runs")
    parser.add_argument("--rounds", type=int, default=4, help="turns the two servers take in the throughput runs")
    parser.add_argument("--ceiling-batch", type=int, default=16, help="batch of the in-process ceiling")
    parser.add_argument("--max-batch-size", type=int, default=BatchingOptions.max_batch_size)
    parser.add_argument("--batch-timeout-micros", type=int, default=BatchingOptions.batch_timeout_micros)
    parser.add_argument("--num-batch-threads", type=int, default=BatchingOptions.num_batch_threads)
    parser.add_argument("--sweep", action="store_true", help="also measure every combination below")
    parser.add_argument("--sweep-max-batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--sweep-timeouts-micros", type=int, nargs="+", default=[0, 2000, 10000])
    parser.add_argument("--sweep-threads", type=int, nargs="+", default=[1, 2])
    return parser.parse_args()


def measure(args: argparse.Namespace, images: list[bytes], tmp: Path) -> dict[str, float]:
    """Export, then time the in-process call, REST/gRPC round trips, and throughput off/on."""
    start = time.perf_counter()
    version = export_saved_model(build_module(args.model, args.image_size), tmp / MODEL_NAME)
    results = {"export_s": time.perf_counter() - start}
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    one = tf.constant(images[:1])
    plain = ServerProcess(version.parent, batching=False, args=args)
    batching = ServerProcess(version.parent, batching=True, args=args)
    try:
        rest = ServingClient(f"http://127.0.0.1:{plain.rest_port}", MODEL_NAME)
        over_grpc = ServingClient(f"127.0.0.1:{plain.grpc_port}", MODEL_NAME)
        latency = paired_latency_ms({"in_process_ms": lambda: signature(images=one),
                                     "rest_ms": lambda: rest.predict(images[:1]),
                                     "grpc_ms": lambda: over_grpc.predict(images[:1])}, args.iterations)
        results.update(latency)
        results["ceiling"] = in_process_throughput(signature, images, args.ceiling_batch, args.iterations)
        rates = alternating_throughput({"unbatched": f"http://127.0.0.1:{plain.rest_port}",
                                        "batched": f"http://127.0.0.1:{batching.rest_port}",
                                        "batched_grpc": f"127.0.0.1:{batching.grpc_port}"},
                                       images, args.clients, args.requests, args.rounds)
        results.update(rates)
    finally:
        plain.stop()
        batching.stop()
    if args.sweep:
        results["sweep"] = sweep(version.parent, images, args)
    return results


def sweep(base_path: Path, images: list[bytes], args: argparse.Namespace) -> list[tuple[int, int, int, float]]:
    """(max_batch_size, batch_timeout_micros, num_batch_threads, REST img/s) per combination."""
    rows = []
    for max_batch in args.sweep_max_batch_sizes:
        for timeout in args.sweep_timeouts_micros:
            for threads in args.sweep_threads:
                settings = argparse.Namespace(max_batch_size=max_batch, batch_timeout_micros=timeout,
                                              num_batch_threads=threads)
                server = ServerProcess(base_path, batching=True, args=settings)
                try:
                    rate = alternating_throughput({"rest": f"http://127.0.0.1:{server.rest_port}"}, images,
                                                  args.clients, args.requests, args.rounds)["rest"]
                finally:
                    server.stop()
                rows.append((max_batch, timeout, threads, rate))
                print(f"  sweep: max_batch_size {max_batch:3d}  timeout {timeout:6d} us  threads {threads}  "
                      f"{rate:7.1f} img/s", flush=True)
    return rows


def report(results: dict[str, float], args: argparse.Namespace) -> None:
    r = results
    print(f"\nserving benchmark: {args.model} detector at {args.image_size} px, 640x480 JPEG inputs, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (export took {r['export_s']:.1f} s)")
    print(f"  in-process call, batch 1     {r['in_process_ms']:8.1f} ms")
    print(f"  REST round trip, batch 1     {r['rest_ms']:8.1f} ms   overhead ratio REST / in-process = "
          f"{r['rest_ms'] / r['in_process_ms']:.2f}")
    print(f"  gRPC round trip, batch 1     {r['grpc_ms']:8.1f} ms   ratio gRPC / in-process = "
          f"{r['grpc_ms'] / r['in_process_ms']:.2f}")
    ceiling = r["ceiling"]
    print(f"  ceiling: in-process, batch {args.ceiling_batch:2d} {ceiling:8.1f} img/s")
    print(f"  {args.clients} REST clients, batching off {r['unbatched']:8.1f} img/s   "
          f"{r['unbatched'] / ceiling:.2f} of the ceiling")
    print(f"  {args.clients} REST clients, batching on  {r['batched']:8.1f} img/s   "
          f"{r['batched'] / ceiling:.2f} of the ceiling, ratio on / off = {r['batched'] / r['unbatched']:.2f}")
    print(f"  {args.clients} gRPC clients, batching on  {r['batched_grpc']:8.1f} img/s   "
          f"{r['batched_grpc'] / ceiling:.2f} of the ceiling")
    print(f"  (batching: max_batch_size {args.max_batch_size}, timeout {args.batch_timeout_micros} us, "
          f"{args.num_batch_threads} batch threads)")
    if "sweep" in r:
        best = max(r["sweep"], key=lambda row: row[3])
        print(f"  sweep best: max_batch_size {best[0]}, timeout {best[1]} us, {best[2]} threads: "
              f"{best[3]:.1f} img/s = {best[3] / ceiling:.2f} of the ceiling")


def main() -> None:
    args = parse_args()
    images = [jpeg(seed) for seed in range(8)]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        report(measure(args, images, Path(tmp)), args)


if __name__ == "__main__":
    main()
