"""Server memory per held idle connection (run from a checkout; ``run_all.py memory`` runs it).

A fresh server per contender and round holds ``warm`` connections; its
``VmRSS`` (and ``Pss``) is read once it has stopped using CPU; it then holds N
in all and is read again: bytes per connection = growth / (N - warm).  Each
connection is proven served by a one-byte echo before it counts, and the
``warm`` ones keep one-time costs (imports, first buffers) out of the figure.
The connections are held by another process (``python benchmarks/memory.py
hold HOST PORT STAGES``), which prints ``{"held": N}`` after each stage and
waits for a line on stdin before the next.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from pollkit.bench.echo import Contender, ServerProcess, choose_cpus, connect_many, server_cpu
from pollkit.bench.harness import Progress, cell, judge, summarize, table

TARGET_BYTES, TARGET_CONNECTIONS, TARGET_CONTENDER = 512, 5000, "pollkit-epoll"


def _memory(pid: int) -> tuple[int, int | None]:
    """(VmRSS, Pss or None) of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            pss = next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return rss, None
    return rss, pss


def _settle(pid: int) -> None:
    """Wait (at most 5 s) until the server stops using CPU, so its memory has settled."""
    last = server_cpu([pid])
    for _ in range(100):
        time.sleep(0.05)  # sampling a counter: there is no event to wait on
        now = server_cpu([pid])
        if now == last:
            return
        last = now


def _round(contender: Contender, counts: Sequence[int], warm: int) -> dict[int, list[float]]:
    """One fresh server: [RSS, Pss] bytes per connection at each count (Pss may be missing)."""
    server_cpu_index, client_cpu = choose_cpus()
    server = ServerProcess(contender, server_cpu_index)
    stages = ",".join(map(str, [warm, *counts]))
    cpu = str(-1 if client_cpu is None else client_cpu)
    argv = [sys.executable, __file__, "hold", server.host, str(server.port), stages, cpu]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None  # a PIPE
    assert holder.stdout is not None  # a PIPE
    found: dict[int, list[float]] = {}
    try:
        base: tuple[int, int | None] = (0, None)
        for stage in (warm, *counts):
            line = holder.stdout.readline()  # the holder's own timeouts bound this
            if not line:
                raise RuntimeError(f"the holder stopped before {stage} connections")
            held = json.loads(line)["held"]
            _settle(server.pid)
            rss, pss = _memory(server.pid)
            if stage == warm:
                base = (rss, pss)
            else:
                found[stage] = [(rss - base[0]) / (held - warm)]
                if pss is not None and base[1] is not None:
                    found[stage].append((pss - base[1]) / (held - warm))
            holder.stdin.write("\n")
            holder.stdin.flush()
    finally:
        holder.stdin.close()
        holder.wait(60)
        holder.stdout.close()
        server.stop()
    return found


def run(
    contenders: Sequence[Contender],
    counts: Sequence[int],
    rounds: int,
    warm: int,
    progress: Progress,
) -> dict[str, Any]:
    """Memory per held idle connection at each count and contender; fresh servers each round."""
    progress.start("memory", rounds * len(contenders))
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for contender in contenders:
        for n in counts:
            results[contender.name, n] = {"contender": contender.name, "connections": n}
            results[contender.name, n] |= {"warm": warm, "rounds_rss": [], "rounds_pss": []}
            results[contender.name, n]["errors"] = []
    for number in range(rounds):
        for contender in contenders:
            try:
                for n, (rss, *pss) in _round(contender, counts, warm).items():
                    results[contender.name, n]["rounds_rss"].append(rss)
                    results[contender.name, n]["rounds_pss"] += pss
            except (OSError, RuntimeError) as exc:
                for n in counts:
                    results[contender.name, n]["errors"].append(str(exc))
            progress.step(f"{contender.name}, round {number + 1}/{rounds}")
    return describe({"results": list(results.values())})


def describe(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its spreads, table and judged target filled in."""
    rows: list[list[object]] = []
    targets: list[dict[str, Any]] = []
    for result in data["results"]:
        result["rss_bytes_per_connection"] = rss = summarize(result["rounds_rss"])
        result["pss_bytes_per_connection"] = pss = summarize(result["rounds_pss"])
        name, count = result["contender"], result["connections"]
        if result.get("skipped"):
            rows.append([name, count, "skipped: " + result["skipped"]])
            continue
        errors = "; ".join(result["errors"][-1:])
        rows.append([name, count, cell(rss, digits=0), cell(pss, digits=0), errors])
        if (name, count) == (TARGET_CONTENDER, TARGET_CONNECTIONS):
            what = f"memory: {name} bytes per idle connection at {count}"
            targets += filter(None, [judge(what, rss, TARGET_BYTES)])
    headers = ["contender", "connections", "RSS B/conn", "Pss B/conn", "errors"]
    title = "memory: server bytes per held idle connection, medians of rounds [p25-p75]"
    return data | {"table": table(title, headers, rows), "targets": targets}


def _hold(host: str, port: int, stages: Sequence[int]) -> None:
    sockets: list[socket.socket] = []
    try:
        for stage in stages:
            connect_many(host, port, stage - len(sockets), sockets)
            print(json.dumps({"held": len(sockets)}), flush=True)
            if not sys.stdin.readline():
                break
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["hold"] or len(sys.argv) != 6:
        sys.exit("usage: memory.py hold HOST PORT STAGES CPU (run_all.py memory runs the study)")
    if int(sys.argv[5]) >= 0:
        os.sched_setaffinity(0, {int(sys.argv[5])})
    _hold(sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4].split(",")])
