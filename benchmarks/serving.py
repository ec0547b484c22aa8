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
   fraction of the ceiling; and the same 8 clients as threads calling the server's
   batching core (`PredictionCore`) directly, without the network,
5. where the CPU goes: CPU ms per image of the ceiling, of the batching core, and of the
   server process and the clients in each run of 4 (from /proc: Linux only).
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

import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from detseg.serving import json_tensors  # noqa: E402
from detseg.serving.batching import BatchingOptions  # noqa: E402
from detseg.serving.client import ServingClient  # noqa: E402
from detseg.serving.export import export_saved_model  # noqa: E402
from detseg.serving.prediction import PredictionCore  # noqa: E402
from detseg.serving.registry import load_servable  # noqa: E402
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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux `/proc`; all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def timed_requests(address: str, images: list[bytes], clients: int, requests_per_client: int,
                   server_pid: int) -> tuple[float, float, float]:
    """`(seconds, client CPU s, server CPU s)` for `clients` threads to send `requests_per_client`
    one-image requests each: the clients are this process's threads, the server its own process."""
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
    start, client_cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu_seconds(server_pid)
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client requests failed, first: {errors[0]}")
    return (time.perf_counter() - start, time.process_time() - client_cpu,
            process_cpu_seconds(server_pid) - server_cpu)


def in_process_throughput(signature: Callable[..., Any], images: list[bytes], batch: int,
                          iterations: int) -> tuple[float, float]:
    """`(images/s, CPU s per image)` of the SavedModel's `serving_default` called in-process on
    batches of `batch` JPEGs (this process's CPU time over the timed calls)."""
    batch_images = tf.constant([images[i % len(images)] for i in range(batch)])
    call = lambda: signature(images=batch_images)  # noqa: E731
    for _ in range(3):
        call()
    cpu = time.process_time()
    seconds = paired_latency_ms({"batch": call}, iterations, warmup=0)["batch"] / 1000
    return batch / seconds, (time.process_time() - cpu) / (batch * iterations)


def in_process_batching(version: Path, images: list[bytes], args: argparse.Namespace) -> tuple[float, float, float]:
    """`(images/s, CPU s per image, mean batch)` of the server's batching core without the network: `clients`
    threads of this process each send one-image requests straight to a `PredictionCore`
    (signature checks, the batching layer, the SavedModel call), as the REST and gRPC front
    ends do after parsing a request."""
    servable = load_servable(MODEL_NAME, int(version.name), version)
    core = PredictionCore(None, BatchingOptions(max_batch_size=args.max_batch_size,
                                                batch_timeout_micros=args.batch_timeout_micros,
                                                num_batch_threads=args.num_batch_threads))
    barrier = threading.Barrier(args.clients + 1)

    def client_loop(index: int) -> None:
        request = lambda r: {"images": np.array([images[(index + r) % len(images)]], dtype=object)}  # noqa: E731
        core.predict(servable, "", request(0))  # warm
        barrier.wait()
        for r in range(args.requests):
            core.predict(servable, "", request(r))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        start, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.join()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        core.close()
    count = args.clients * args.requests
    return count / seconds, cpu / count, core.batcher.requests_run / core.batcher.batches_run


def rest_json_cpu(signature: Callable[..., Any], images: list[bytes], iterations: int = 200) -> float:
    """CPU s per one-image REST request spent on JSON alone: parsing the request body (base64
    JPEG) and writing the answer from the model's real outputs, as the server does."""
    outputs = {name: value.numpy() for name, value in signature(images=tf.constant(images[:1])).items()}
    body = json.dumps({"instances": [{"b64": base64.b64encode(images[0]).decode("ascii")}]}).encode("utf-8")
    dtypes = {"images": tf.string}

    def parse_and_answer() -> bytes:
        _, request_format = json_tensors.request_arrays(json_tensors.parse_json_object(body), dtypes)
        return json_tensors.response_json(outputs, request_format)

    parse_and_answer()
    cpu = time.process_time()
    for _ in range(iterations):
        parse_and_answer()
    return (time.process_time() - cpu) / iterations


def alternating_throughput(servers: dict[str, tuple[str, int]], images: list[bytes], clients: int,
                           requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per server (`name -> (address, pid)`): images/s and the clients' and the server's CPU
    seconds per image, the servers taking turns in `rounds` short rounds."""
    per_round = max(1, requests // rounds)
    totals = {name: np.zeros(3) for name in servers}
    for _ in range(rounds):
        for name, (address, pid) in servers.items():
            totals[name] += timed_requests(address, images, clients, per_round, pid)
    count = clients * per_round * rounds
    return {name: {"rate": count / seconds, "client_cpu": client_cpu / count, "server_cpu": server_cpu / count}
            for name, (seconds, client_cpu, server_cpu) in totals.items()}


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
        results["ceiling"], results["ceiling_cpu"] = in_process_throughput(
            signature, images, args.ceiling_batch, args.iterations)
        results["core"], results["core_cpu"], results["core_batch"] = in_process_batching(version, images, args)
        results["json_cpu"] = rest_json_cpu(signature, images)
        runs = alternating_throughput({"unbatched": (f"http://127.0.0.1:{plain.rest_port}", plain.process.pid),
                                       "batched": (f"http://127.0.0.1:{batching.rest_port}", batching.process.pid),
                                       "batched_grpc": (f"127.0.0.1:{batching.grpc_port}", batching.process.pid)},
                                      images, args.clients, args.requests, args.rounds)
        results.update({name: run["rate"] for name, run in runs.items()})
        results["cpu"] = {name: (run["client_cpu"], run["server_cpu"]) for name, run in runs.items()}
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
                    rate = alternating_throughput({"rest": (f"http://127.0.0.1:{server.rest_port}",
                                                            server.process.pid)},
                                                  images, args.clients, args.requests, args.rounds)["rest"]["rate"]
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
    print(f"  {args.clients} threads, batching core, no network {r['core']:6.1f} img/s   "
          f"{r['core'] / ceiling:.2f} of the ceiling (mean batch {r['core_batch']:.1f})")
    print(f"  {args.clients} REST clients, batching off {r['unbatched']:8.1f} img/s   "
          f"{r['unbatched'] / ceiling:.2f} of the ceiling")
    print(f"  {args.clients} REST clients, batching on  {r['batched']:8.1f} img/s   "
          f"{r['batched'] / ceiling:.2f} of the ceiling, ratio on / off = {r['batched'] / r['unbatched']:.2f}")
    print(f"  {args.clients} gRPC clients, batching on  {r['batched_grpc']:8.1f} img/s   "
          f"{r['batched_grpc'] / ceiling:.2f} of the ceiling")
    print(f"  (batching: max_batch_size {args.max_batch_size}, timeout {args.batch_timeout_micros} us, "
          f"{args.num_batch_threads} batch threads)")
    ceiling_cpu = r["ceiling_cpu"]
    print("  where the CPU goes (CPU ms per image, and cores kept busy; the clients are this process's threads):")
    print(f"    ceiling, in-process batch {args.ceiling_batch:2d}   {1000 * ceiling_cpu:6.1f} ms, "
          f"{r['ceiling'] * ceiling_cpu:.2f} cores busy")
    print(f"    batching core, no network   {1000 * r['core_cpu']:6.1f} ms, "
          f"{r['core'] * r['core_cpu']:.2f} cores busy")
    for name, label in (("unbatched", "REST, batching off"), ("batched", "REST, batching on "),
                        ("batched_grpc", "gRPC, batching on ")):
        client_cpu, server_cpu = r["cpu"][name]
        busy = r[name] * (client_cpu + server_cpu)
        print(f"    {label}  server {1000 * server_cpu:6.1f} ms ({ceiling_cpu / server_cpu:.2f} of the "
              f"ceiling's efficiency), clients {1000 * client_cpu:5.1f} ms, {busy:.2f} cores busy; the server "
              f"alone on those cores: {busy / server_cpu / r['ceiling']:.2f} of the ceiling")
    print(f"    REST's JSON alone (parse a request, write its answer): {1000 * r['json_cpu']:.1f} ms per request")
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
