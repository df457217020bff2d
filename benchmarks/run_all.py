"""Reproduce the Performance page's data and plots: every study, one command, from a checkout.

    python benchmarks/run_all.py             # every study: docs/_static/bench/results.json, PNGs
    python benchmarks/run_all.py echo resp   # only these (the file then holds only these)
    python benchmarks/run_all.py --quick     # a smoke check, written to a temporary directory
    python benchmarks/run_all.py --retable docs/_static/bench/results.json
                                             # no measuring: recompute the tables, spreads,
                                             # verdicts and plots of a saved run

Run it on a quiet machine: nothing else may compete for the CPUs while it
measures.  The plots need matplotlib (``pip install -e '.[bench,uvloop]'``);
without it the JSON is written and the plots are skipped, with a note.

The studies use the one harness of :mod:`pollkit.bench` (serpentine rounds,
medians with ``[p25-p75]``, paired ratios, one judge of targets).  Besides
what ``pollkit bench`` measures, they compare pollkit with its peers:

* ``overhead``/``scaling``: ``poll(0)`` of each driver, the raw call, stdlib
  ``selectors`` and a bare wrapper (one Python method around the raw call,
  the least any wrapper with pollkit's result contract can cost);
* ``echo``: ``pollkit echo`` on each driver against the servers of
  ``peers.py`` (raw ``select.epoll`` loop, the same loop under a minimal
  Protocol layer, selectors, asyncio Protocol and streams, uvloop Protocol),
  driven by ``loadgen.c`` where a C compiler exists; targets at 50
  connections x 1 KiB (many short rounds there): pollkit-epoll's CPU per
  message at most 1.05 times raw-epoll's and below uvloop's;
* ``memory`` (``memory.py``): bytes per held idle connection; target on epoll
  at most 512 B at 5,000 connections;
* ``workers``: ``pollkit echo --workers N``, servers unpinned;
* ``resp`` (``resp_bench.py``): ``redis-benchmark`` against RESP servers.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import select
import selectors
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import memory
import resp_bench
from pollkit._backends import DRIVERS
from pollkit._select import FD_SETSIZE
from pollkit.bench import echo, overhead
from pollkit.bench.echo import Contender
from pollkit.bench.harness import (
    Progress,
    judge,
    paired_ratios,
    run_studies,
    summarize,
    write_json,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "docs" / "_static" / "bench"
STUDIES = ("overhead", "scaling", "echo", "memory", "workers", "resp")
PEERS = (
    "raw-epoll",
    "protocol-floor",
    "selectors",
    "asyncio-protocol",
    "asyncio-streams",
    "uvloop-protocol",
)
TARGET_POINT = (50, 1024)
CPU = "server_cpu_ns_per_message"

FULL: dict[str, Any] = {
    "overhead_rounds": 200,
    "idle": 1000,
    "scaling_rounds": 30,
    "scaling_fds": [10, 30, 100, 300, 1000, 3000, 10000],
    "echo_connections": [1, 10, 50, 500, 5000],
    "echo_sizes": [64, 1024, 16384, 65536],
    "echo_rounds": 7,
    # pollkit, the raw loop and uvloop lie a few percent apart at the targets' point,
    # and this machine's speed drifts over seconds: short rounds, interleaved,
    # pair the contenders closer in time (see docs/performance.md), so many.
    "echo_target_rounds": 61,
    "echo_target_duration": 0.2,
    "echo_duration": 1.0,
    "memory_connections": [1000, 5000, 10000],
    "memory_warm": 50,
    "memory_rounds": 1,
    "workers": list(range(1, max(2, os.cpu_count() or 1) + 1)),
    "workers_rounds": 3,
    "resp_requests": 100_000,
    "resp_rounds": 5,
}
QUICK = FULL | {
    "overhead_rounds": 20,
    "scaling_rounds": 5,
    "scaling_fds": [10, 100, 1000],
    "echo_connections": [10],
    "echo_sizes": [1024],
    "echo_rounds": 1,
    "echo_target_rounds": 1,
    "echo_target_duration": 0.3,
    "echo_duration": 0.3,
    "memory_connections": [200],
    "memory_warm": 20,
    "workers": [1, 2],
    "workers_rounds": 1,
    "resp_requests": 500,
    "resp_rounds": 1,
}


# -- overhead: the extra contenders ------------------------------------------------------


Ready = list[tuple[int, int]]


class _Wrapper:
    """The least a Python method with pollkit's result contract can cost, per driver."""

    def __init__(self, driver: str, fds: list[int]) -> None:
        self.fds: list[int] = fds
        self.none: list[int] = []
        if driver != "select":
            self.kernel = getattr(select, driver)()  # select.epoll() or select.poll()
            for fd in fds:
                self.kernel.register(fd, select.POLLIN)
        self.poll = {"epoll": self.poll_epoll, "poll": self.poll_ms}.get(driver, self.poll_select)

    # Each takes max_events too, as pollkit's poll() does: the same call, the same cost.
    def poll_epoll(self, timeout: float | None = None, max_events: int | None = None) -> Ready:
        result: Ready = self.kernel.poll(timeout)
        return result

    def poll_ms(self, timeout: float | None = None, max_events: int | None = None) -> Ready:
        result: Ready = self.kernel.poll(None if timeout is None else timeout * 1e3)
        return result

    def poll_select(self, timeout: float | None = None, max_events: int | None = None) -> Ready:
        readable, _, _ = select.select(self.fds, self.none, self.none, timeout)
        return list(zip(readable, repeat(select.POLLIN)))

    def close(self) -> None:
        if hasattr(self, "kernel") and hasattr(self.kernel, "close"):
            self.kernel.close()


def _wrapper(driver: str, fds: list[int]) -> overhead.Contender:
    wrapper = _Wrapper(driver, fds)
    method = {"epoll": "poll_epoll", "poll": "poll_ms"}.get(driver, "poll_select")
    loop = overhead.timing_loop(f"{driver} wrapper", f"obj.{method}(0)", obj=wrapper)
    return overhead.Contender(loop, lambda: len(wrapper.poll(0)), wrapper.close)


def _selectors(driver: str, fds: list[int]) -> overhead.Contender:
    chosen: selectors.BaseSelector = getattr(selectors, f"{driver.capitalize()}Selector")()
    for fd in fds:
        chosen.register(fd, selectors.EVENT_READ)
    loop = overhead.timing_loop(f"{driver} selectors", "obj.select(0)", obj=chosen)
    return overhead.Contender(loop, lambda: len(chosen.select(0)), chosen.close)


# -- echo, workers: peers and the C load generator ----------------------------------------


def _c_generator(progress: Progress) -> echo.Generator | None:
    """``loadgen.c``, compiled once per source version with ``$CC``; ``None`` without a compiler."""
    source = HERE / "loadgen.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / f"pollkit-loadgen-{digest}"
    compiler = os.environ.get("CC") or "cc"
    if not binary.exists():
        if shutil.which(compiler) is None:
            progress.note(f"no C compiler ({compiler!r}): the Python load generator drives echo")
            return None
        partial = f"{binary}.{os.getpid()}"
        subprocess.run([compiler, "-O2", "-o", partial, str(source)], check=True, timeout=120)
        os.replace(partial, binary)  # concurrent runs never see half a binary

    def generator(
        host: str,
        port: int,
        connections: int,
        size: int,
        warmup: float,
        duration: float,
        pids: list[int],
        cpu: int | None,
    ) -> list[str]:
        args = (host, port, connections, size, warmup, duration, ",".join(map(str, pids)))
        return [str(binary), *map(str, args), str(-1 if cpu is None else cpu)]

    return generator


def _peers() -> tuple[list[Contender], dict[str, str]]:
    found, skipped = [], {}
    for name in PEERS:
        if name == "uvloop-protocol" and importlib.util.find_spec("uvloop") is None:
            skipped[name] = "uvloop is not installed (pip install uvloop)"
            continue
        argv = (sys.executable, str(HERE / "peers.py"), name)
        found.append(Contender(name, (*argv, "--host", "{host}", "--port", "{port}")))
    return found, skipped


def _echo_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The echo targets at 50 x 1 KiB, judged on paired rounds."""
    targets = []
    for point in data["points"]:
        if (point["connections"], point["size"]) != TARGET_POINT:
            continue
        entries = point["contenders"]
        mine = entries.get("pollkit-epoll", {}).get("rounds", [])
        for other, limit, below in (("raw-epoll", 1.05, False), ("uvloop-protocol", 1.0, True)):
            theirs = entries.get(other, {}).get("rounds", [])
            what = f"echo 50x1KiB: pollkit-epoll/{other} CPU per message"
            ratios = summarize(paired_ratios(mine, theirs, CPU))
            targets.append(judge(what, ratios, limit, below=below))
    return [t for t in targets if t]


def _descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (a ``--workers`` server's children)."""
    parents: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # exited while we looked
        parents.setdefault(parent, []).append(int(entry))
    found, frontier = [pid], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


# -- the studies -------------------------------------------------------------------------


def studies(sizes: dict[str, Any], specs: list[str], progress: Progress) -> dict[str, Any]:
    """Each study's runner, as :func:`pollkit.bench.harness.run_studies` takes them."""
    extra = {"selectors": _selectors, "wrapper": _wrapper}
    idle = sizes["idle"]

    def run_echo() -> dict[str, Any]:
        generator = _c_generator(progress) or echo.python_generator
        peers, skipped = _peers()
        # Compared pairs side by side in the round order.
        order = ["raw-epoll", "pollkit-epoll", "protocol-floor", "uvloop-protocol"]
        contenders = sorted(
            peers + echo.pollkit_contenders(specs),
            key=lambda c: order.index(c.name) if c.name in order else len(order),
        )
        # The cross through the targets' point: each count at 1 KiB, each size at 50 connections.
        count, size = TARGET_POINT
        cross = [(c, size) for c in sizes["echo_connections"]]
        cross += [(count, s) for s in sizes["echo_sizes"] if (count, s) not in cross]
        rounds = {True: sizes["echo_target_rounds"], False: sizes["echo_rounds"]}
        duration = {True: sizes["echo_target_duration"], False: sizes["echo_duration"]}
        points = []
        for at_target in (True, False):
            chosen = [p for p in cross if (p == TARGET_POINT) == at_target]
            if chosen:
                part = echo.run(
                    "echo",
                    contenders,
                    chosen,
                    rounds[at_target],
                    progress,
                    duration=duration[at_target],
                    base="raw-epoll",
                    generator=generator,
                )
                points += part["points"]
        used = "python" if generator is echo.python_generator else "c"
        found = {"base": "raw-epoll", "points": points, "generator": used, "skipped": skipped}
        data = echo.describe("echo", found)
        data["table"]["title"] += f"; load generator: {used}"
        return data | {"targets": _echo_targets(data)}

    def run_memory() -> dict[str, Any]:
        peers, _ = _peers()
        contenders = [*peers, *echo.pollkit_contenders(specs)]
        wide = [c for c in contenders if not c.name.endswith("select")]
        narrow = [c for c in contenders if c.name.endswith("select")]
        counts = sizes["memory_connections"]
        warm, rounds = sizes["memory_warm"], sizes["memory_rounds"]
        data = memory.run(wide, counts, rounds, warm, progress)
        small = [n for n in counts if n < FD_SETSIZE - 24]
        if narrow and small:
            data["results"] += memory.run(narrow, small, rounds, warm, progress)["results"]
        return memory.describe(data)

    def run_workers() -> dict[str, Any]:
        backend = specs[0]
        contenders = [
            Contender(f"workers-{n}", c.argv)
            for n in sizes["workers"]
            for c in echo.pollkit_contenders([backend], "--workers", str(n))
        ]
        data = echo.run(
            "workers",
            contenders,
            [TARGET_POINT],
            sizes["workers_rounds"],
            progress,
            duration=sizes["echo_duration"],
            generator=_c_generator(progress) or echo.python_generator,
            pin=False,
            pids_of=_descendants,
        )
        return data | {"backend": backend, "cpus": os.cpu_count()}

    return {
        "overhead": lambda: overhead.run(
            "overhead",
            specs,
            [(idle, 1), (idle, 64)],
            sizes["overhead_rounds"],
            progress,
            extra,
            select_idle=500,
        ),
        "scaling": lambda: overhead.run(
            "scaling",
            specs,
            [(n, 1) for n in sizes["scaling_fds"]],
            sizes["scaling_rounds"],
            progress,
            {"selectors": _selectors},
        ),
        "echo": run_echo,
        "memory": run_memory,
        "workers": run_workers,
        "resp": lambda: resp_bench.run(
            specs, [1, 16], sizes["resp_requests"], sizes["resp_rounds"], progress
        ),
    }


def retable(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A saved study's spreads, table and verdicts, recomputed by today's code (no measuring)."""
    if name in ("overhead", "scaling"):
        return overhead.describe(name, data)
    if name in ("echo", "workers"):
        first = next(iter(data["points"][0]["contenders"]), "")
        described = echo.describe(name, {"base": "raw-epoll" if name == "echo" else first} | data)
        if "generator" in data:
            described["table"]["title"] += f"; load generator: {data['generator']}"
        return described | {"targets": _echo_targets(described) if name == "echo" else []}
    return memory.describe(data) if name == "memory" else resp_bench.describe(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("studies", nargs="*", metavar="STUDY", help=", ".join(STUDIES))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check")
    parser.add_argument("--json", help=f"results file (default: {RESULTS}/results.json)")
    parser.add_argument("--plot", help="where the PNGs go (default: beside the JSON)")
    parser.add_argument("--retable", metavar="PATH", help="recompute a saved run; no measuring")
    args = parser.parse_args(argv)
    unknown = set(args.studies) - set(STUDIES)
    if unknown:
        parser.error(f"unknown studies: {', '.join(sorted(unknown))}; choose from {STUDIES}")
    chosen = list(dict.fromkeys(args.studies)) or list(STUDIES)
    default = Path(tempfile.mkdtemp(prefix="pollkit-bench-")) if args.quick else RESULTS
    json_path = Path(args.json or default / "results.json")
    progress = Progress()
    if args.retable is not None:
        saved = json.loads(Path(args.retable).read_text())
        runners = {n: (lambda n=n: retable(n, saved["studies"][n])) for n in saved["studies"]}
        document = run_studies(runners, saved["settings"], None, progress)
        document |= {"machine": saved["machine"], "seconds": saved.get("seconds")}
        write_json(json_path, document)
    else:
        sizes = QUICK if args.quick else FULL
        specs = list(DRIVERS)
        runners = studies(sizes, specs, progress)
        document = run_studies({n: runners[n] for n in chosen}, sizes, str(json_path), progress)
    progress.note(f"results: {json_path}")
    if importlib.util.find_spec("matplotlib") is None:
        progress.note("no plots: matplotlib is not installed (pip install 'pollkit[bench]')")
        return 0
    from plots import plot_all

    for written in plot_all(document, args.plot or json_path.parent):
        progress.note(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
