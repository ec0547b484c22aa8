"""Ports for a child process to bind, safe against other tests and pytest-xdist workers.

A server in this process binds port 0 itself (`ServerOptions(port=0)`) and reports the port.
A child process given a port number on its command line cannot (`detseg serve` and TF
Serving read 0 as "off"; TF_CONFIG names every worker's address up front), so the port
must be chosen here and released before the child binds it. Picking it with `bind(0)`
leaves a race: the kernel hands the same ephemeral range to every other `bind(0)` and to
every outgoing connection (thousands per serving test), any of which may take the port
in the seconds the child needs to start. Ports below that range are never handed out
that way, so a free one stays free until the child binds it; only a process binding
that very number could take it, and the choice is random across the range.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_START = 32_768  # Linux's default when the range cannot be read


def ephemeral_range_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def _is_free(port: int, host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def unassigned_local_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports on `host`, below the kernel's ephemeral range (see module doc)."""
    # SystemRandom: tests seed the `random` module, and xdist workers would draw alike.
    chooser = random.SystemRandom()
    candidates = range(LOWEST_PORT, max(LOWEST_PORT + 1000, ephemeral_range_start()))
    ports: list[int] = []
    for _ in range(1000):
        port = chooser.choice(candidates)
        if port not in ports and _is_free(port, host):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports found on {host} in {candidates}")
