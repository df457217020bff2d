"""Echo servers side by side: messages/s, p50/p99 latency, server CPU per message, memory.

pollkit's ``EchoServer`` on each driver (``python -m pollkit echo``) against a
hand-written raw ``select.epoll`` loop, a stdlib ``selectors`` loop, asyncio
Protocol, asyncio streams and uvloop Protocol (when installed), each server in
its own process pinned to one CPU, the load generator in another pinned to
the other.  50 connections x 1 KiB, closed-loop ping-pong, alternating
rounds; then server memory per held idle connection at 5,000 connections.
Prints tables and writes ``benchmarks/results/echo_bench.json``.

    python3 benchmarks/echo_bench.py            # about 2 minutes
    python3 benchmarks/echo_bench.py --quick    # a smoke check, under a minute
    python3 benchmarks/echo_bench.py --rounds 9 --connections 50,500

Targets (issue 3): at 50 x 1 KiB pollkit-epoll's CPU per message <= 1.05x
raw-epoll's and below uvloop's; <= 512 bytes per held idle connection on
epoll at 5,000 connections.  The machinery is ``pollkit.bench`` (also
``pollkit bench echo memory``, which sweeps more points).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pollkit.bench.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

DEFAULTS = [
    "echo",
    "memory",
    "--connections", "50",
    "--sizes", "1024",
    "--rounds", "7",
    "--duration", "0.7",
    "--memory-connections", "5000",
    "--json", str(RESULTS / "echo_bench.json"),
]  # fmt: skip

QUICK = ["--rounds", "2", "--memory-connections", "1000", "--duration", "0.5"]

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--quick" in argv:
        argv = [arg for arg in argv if arg != "--quick"]
        argv = QUICK + argv
    sys.exit(main([*DEFAULTS, *argv]))
