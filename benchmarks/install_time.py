"""How long `make install`'s installer takes: pip against uv, same pins, same package.

Each side gets a fresh venv of the base interpreter and installs what `make install`
installs (`-e ".[dev,weights]"` with `-c constraints.txt`, `--no-build-isolation`), with
its own best settings: pip byte-compiles as it installs (its default), uv is asked to
(`--compile-bytecode`); without the compiled files a machine with
`PYTHONDONTWRITEBYTECODE=1` recompiles TensorFlow on every import. Both read their download
caches (run once before timing, so neither side pays for the network), and the sides take
turns, `--rounds` times. Then each venv imports TensorFlow once, timed, to show the
installs are equivalent where it matters.

    .venv/bin/python benchmarks/install_time.py --rounds 1     # ~3 minutes on 2 cores

Needs uv next to this interpreter (`make install` puts it in `.venv/bin`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable))
UV = Path(sys.executable).parent / "uv"
PACKAGE = ".[dev,weights]"


def fresh_venv(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([str(BASE_PYTHON), "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", "constraints.txt",
                    "pip", "setuptools", "wheel"], cwd=ROOT, check=True, capture_output=True)
    return python


def install_command(installer: str, python: Path) -> list[str]:
    if installer == "pip":
        return [str(python), "-m", "pip", "install", "--quiet", "--no-build-isolation",
                "-c", "constraints.txt", "-e", PACKAGE]
    return [str(UV), "pip", "install", "--quiet", "--python", str(python), "--compile-bytecode",
            "--no-build-isolation", "-c", "constraints.txt", "-e", PACKAGE]


def timed_install(installer: str, venv: Path) -> tuple[float, Path]:
    python = fresh_venv(venv)
    start = time.perf_counter()
    subprocess.run(install_command(installer, python), cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start, python


def import_seconds(python: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-c", "import tensorflow"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="timed installs per installer, taking turns")
    args = parser.parse_args()
    if not UV.is_file():
        sys.exit(f"install_time.py: no uv at {UV}; run `make install` first")
    seconds: dict[str, list[float]] = {"pip": [], "uv": []}
    imports: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        for installer in seconds:  # warm each side's download cache, untimed
            timed_install(installer, Path(tmp) / f"warm-{installer}")
            shutil.rmtree(Path(tmp) / f"warm-{installer}")
        for _ in range(args.rounds):
            for installer in seconds:
                elapsed, python = timed_install(installer, Path(tmp) / installer)
                seconds[installer].append(elapsed)
                imports[installer] = import_seconds(python)
                print(f"  {installer}: {elapsed:6.1f} s", flush=True)
    pip_s, uv_s = statistics.median(seconds["pip"]), statistics.median(seconds["uv"])
    print(f"\ninstall of detseg{PACKAGE[1:]} with constraints.txt, warm caches, median of {args.rounds}:")
    print(f"  pip {pip_s:6.1f} s   (then `import tensorflow` {imports['pip']:.1f} s)")
    print(f"  uv  {uv_s:6.1f} s   (then `import tensorflow` {imports['uv']:.1f} s)")
    print(f"  pip / uv = {pip_s / uv_s:.2f}")


if __name__ == "__main__":
    main()
