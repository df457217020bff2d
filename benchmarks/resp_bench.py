"""The RESP study: ``redis-benchmark`` against pollkit's RESP server, asyncio, uvloop, redis-server.

    python benchmarks/resp_bench.py                  # the Performance page's sizes
    python benchmarks/resp_bench.py --quick          # a smoke check whose figures mean little
    python benchmarks/run_all.py resp                # the same, into the page's results

Contenders, each a server in its own process pinned to one CPU, with
``redis-benchmark -t ping,set,get -c 50 -n N -P 1`` (and ``-P 16``) pinned to
another: ``examples/resp_server.py --backend X`` on each pollkit driver
(``pollkit-X``); a minimal RESP server written as an asyncio Protocol, on
uvloop (``uvloop-protocol``) and on plain asyncio (``asyncio-protocol``),
and the example's own protocol on those loops (``uvloop-example``,
``asyncio-example``), both from ``benchmarks/resp_asyncio_server.py``; and
``redis-server`` itself where it is installed.  The ``-example`` rows run
the same Python as the pollkit rows above the loop, so they compare loops.
A contender that cannot run here is skipped, with the reason.

Each round runs every contender once, in serpentine order; a round records
requests/s (all requests over the time ``redis-benchmark`` reports for its
tests) and the server's CPU time per request, read from
``/proc/<pid>/stat`` (``utime + stime``) before and after.  Ratios to
redis-server are paired by round.  Targets: pollkit-epoll / redis-server CPU
per request at most 1.20 at ``-P 1`` and 3.0 at ``-P 16``, and below
uvloop-protocol's at both.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pollkit._backends import DRIVERS
from pollkit._validate import backends_arg, positive_int_arg, positive_ints_arg
from pollkit.bench.echo import Contender, ServerProcess, choose_cpus, server_cpu
from pollkit.bench.harness import (
    Progress,
    cell,
    judge,
    paired_ratios,
    run_studies,
    serpentine,
    summarize,
    table,
)

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "resp_server.py"
BASE, MINE, UVLOOP = "redis-server", "pollkit-epoll", "uvloop-protocol"
#: pollkit/redis-server CPU per request, by pipeline depth.
TARGETS = {1: 1.20, 16: 3.0}
CPU = "server_cpu_ns_per_request"


def contenders(specs: Sequence[str]) -> tuple[list[Contender], dict[str, str]]:
    """The contenders that can run here (the compared ones first), and why the rest cannot."""
    found: list[Contender] = []
    skipped: dict[str, str] = {}
    redis = shutil.which("redis-server")
    if redis is None:
        skipped[BASE] = "redis-server is not installed (apt-get install redis-server)"
    else:
        argv: tuple[str, ...] = (
            redis,
            "--bind",
            "{host}",
            "--port",
            "{port}",
            "--save",
            "",
            "--appendonly",
            "no",
        )
        found.append(Contender(BASE, argv))
    for spec in specs:
        if not EXAMPLE.is_file():
            skipped[f"pollkit-{spec}"] = f"{EXAMPLE} is missing"
            continue
        argv = (sys.executable, str(EXAMPLE), "--host", "{host}", "--port", "{port}")
        found.append(Contender(f"pollkit-{spec}", (*argv, "--backend", spec)))
    for loop in ("uvloop", "asyncio"):
        for protocol, name in (("minimal", f"{loop}-protocol"), ("example", f"{loop}-example")):
            if importlib.util.find_spec(loop) is None:
                skipped[name] = f"{loop} is not installed (pip install {loop})"
                continue
            argv = (sys.executable, str(HERE / "resp_asyncio_server.py"), "--loop", loop)
            argv += ("--protocol", protocol, "--host", "{host}", "--port", "{port}")
            found.append(Contender(name, argv))
    order = [BASE, MINE, UVLOOP]  # the compared pairs run side by side in every round
    found.sort(key=lambda c: order.index(c.name) if c.name in order else len(order))
    return found, skipped


def _round(
    server: ServerProcess, pipeline: int, requests: int, clients: int, cpu: int | None
) -> dict[str, Any]:
    """One ``redis-benchmark`` run against ``server``: its figures, or an ``error``."""
    argv = ["redis-benchmark", "-h", server.host, "-p", str(server.port), "-t", "ping,set,get"]
    argv += ["-c", str(clients), "-n", str(requests), "-P", str(pipeline), "--csv"]
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    before, started = server_cpu([server.pid]), time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, preexec_fn=pin)
    except subprocess.TimeoutExpired:
        return {"error": "redis-benchmark timed out"}
    after, wall = server_cpu([server.pid]), time.monotonic() - started
    tests = {
        row[0]: float(row[1]) for row in csv.reader(done.stdout.splitlines()) if row[0] != "test"
    }
    if done.returncode != 0 or not tests or server.process.poll() is not None:
        lines = (done.stderr + done.stdout).strip().splitlines() or ["no output"]
        return {"error": f"redis-benchmark failed ({lines[-1]}); server: {server.log_tail()}"}
    total = requests * len(tests)
    found: dict[str, Any] = {"requests": total, "wall_seconds": wall, "tests_per_second": tests}
    found["requests_per_second"] = total / sum(requests / rps for rps in tests.values() if rps)
    found[CPU] = (after[1] - before[1]) * 1e9 / total
    if after[0] is not None and before[0] is not None:
        found["server_cpu_schedstat_ns_per_request"] = (after[0] - before[0]) / total
    return found


def run(
    specs: Sequence[str],
    pipelines: Sequence[int],
    requests: int,
    rounds: int,
    progress: Progress,
    clients: int = 50,
) -> dict[str, Any]:
    """The study: every contender at each pipeline depth, in serpentine rounds."""
    found, skipped = contenders(specs)
    if shutil.which("redis-benchmark") is None:
        skipped = {"all": "redis-benchmark is not installed (apt-get install redis-tools)"}
        found = []
    server_cpu_index, client_cpu = choose_cpus()
    servers: list[ServerProcess] = []
    points = []
    try:
        for contender in found:
            try:
                servers.append(ServerProcess(contender, server_cpu_index))
            except (OSError, RuntimeError) as exc:
                skipped[contender.name] = str(exc)
        progress.start("resp", len(pipelines) * rounds * len(servers))
        for pipeline in pipelines:
            runs: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
            for number in range(rounds):
                for server in serpentine(servers, number):
                    runs[server.name].append(
                        _round(server, pipeline, requests, clients, client_cpu)
                    )
                    progress.step(f"-P {pipeline} {server.name} round {number + 1}/{rounds}")
            point = {"pipeline": pipeline, "clients": clients, "requests": requests}
            points.append(point | {"contenders": {n: {"rounds": r} for n, r in runs.items()}})
    finally:
        for server in servers:
            server.stop()
    return describe({"skipped": skipped, "points": points})


def describe(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its spreads, table and judged targets filled in."""
    rows: list[list[object]] = []
    targets = []
    for point in data["points"]:
        pipeline, entries = point["pipeline"], point["contenders"]
        base = entries.get(BASE, {}).get("rounds", [])
        for name, entry in entries.items():
            good = [r for r in entry["rounds"] if "error" not in r]
            for key in ("requests_per_second", CPU):
                entry[key] = summarize([r[key] for r in good])
            entry["cpu_per_request_ratio_to_redis"] = summarize(
                paired_ratios(entry["rounds"], base, CPU)
            )
            errors = [r["error"] for r in entry["rounds"] if "error" in r]
            rows.append(
                [
                    f"-P {pipeline}",
                    name,
                    cell(entry["requests_per_second"], digits=0),
                    cell(entry[CPU], 1e-3),
                    cell(entry["cpu_per_request_ratio_to_redis"], digits=3),
                    "; ".join(errors[-1:]),
                ]
            )
        if MINE in entries:
            mine = entries[MINE]["rounds"]
            what = f"RESP -P {pipeline}: {MINE}/{BASE} CPU per request"
            targets.append(
                judge(what, summarize(paired_ratios(mine, base, CPU)), TARGETS.get(pipeline, 1.0))
            )
            theirs = entries.get(UVLOOP, {}).get("rounds", [])
            what = f"RESP -P {pipeline}: {MINE}/{UVLOOP} CPU per request"
            targets.append(
                judge(what, summarize(paired_ratios(mine, theirs, CPU)), 1.0, below=True)
            )
    rows += [["", name, "skipped: " + why] for name, why in data["skipped"].items()]
    headers = ["pipeline", "contender", "requests/s", "server CPU us/request"]
    headers += [f"CPU/request vs {BASE}", "errors"]
    title = (
        "resp: redis-benchmark -t ping,set,get -c 50; medians of rounds [p25-p75], paired ratios"
    )
    return data | {"table": table(title, headers, rows), "targets": [t for t in targets if t]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", type=backends_arg, default=list(DRIVERS))
    parser.add_argument("--pipelines", type=positive_ints_arg, default=[1, 16])
    parser.add_argument("--requests", type=positive_int_arg, default=100_000, help="-n per test")
    parser.add_argument("--rounds", type=positive_int_arg, default=5)
    parser.add_argument("--quick", action="store_true", help="500 requests, 1 round")
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    args = parser.parse_args(argv)
    requests, rounds = (500, 1) if args.quick else (args.requests, args.rounds)
    progress = Progress()
    study = {"resp": lambda: run(args.backends, args.pipelines, requests, rounds, progress)}
    run_studies(study, {"resp_requests": requests, "resp_rounds": rounds}, args.json, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
