"""``pollkit bench``: rerunnable measurements of every driver, the raw calls and the peers.

Studies (all of them when none is named):

* ``overhead``: one ``poll(0)`` with 1,000 idle fds (500 on select) and 1 or
  64 ready fds, pollkit beside the raw ``select`` call, stdlib ``selectors``
  and a bare wrapper (:mod:`pollkit.bench.overhead`).
* ``scaling``: one ``poll(0)`` with N idle fds and 1 ready, N = 10 ... 10,000.
* ``echo``: echo servers under a closed-loop load generator: messages/s,
  p50/p99 latency, server CPU per message (:mod:`pollkit.bench.echo`), over a
  cross of connection counts (at the reference size) and message sizes (at
  the reference connection count); the reference point is 50 x 1 KiB.
* ``memory``: server memory per held idle connection.
* ``workers``: ``pollkit echo --workers N`` throughput through SO_REUSEPORT.

Every study alternates its contenders round by round and reports medians
with their spread (``[p25-p75]``).  Tables go to stdout, progress to stderr,
everything measured to one JSON file, plots (``--plot DIR``, needs
matplotlib: ``pip install pollkit[bench]``) to PNGs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["STUDIES", "add_commands", "configure_parser", "main", "run"]

STUDIES = ("overhead", "scaling", "echo", "memory", "workers")
_DRIVERS = ("epoll", "poll", "select")


def _study(text: str) -> str:
    if text not in STUDIES:
        raise argparse.ArgumentTypeError(
            f"unknown study {text!r}; choose from {', '.join(STUDIES)}"
        )
    return text


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 1,10,50, not {text!r}"
        )
    return values


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(choices)}"
            )
        return names

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], not {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``pollkit bench``'s arguments to ``parser`` and make it run the studies."""
    from .peers import PEERS

    parser.add_argument(
        "studies",
        nargs="*",
        type=_study,
        metavar="STUDY",
        help=f"what to measure: {', '.join(STUDIES)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, few rounds: a smoke check"
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help="alternating rounds of every study but memory",
    )
    parser.add_argument(
        "--memory-rounds",
        type=_positive_int,
        default=None,
        help="memory: rounds, each with fresh servers (default: 1)",
    )
    parser.add_argument(
        "--backends",
        type=_names(_DRIVERS),
        default=None,
        metavar="LIST",
        help="pollkit drivers to measure (default: epoll,poll,select)",
    )
    parser.add_argument(
        "--peers",
        type=_names(tuple(PEERS)),
        default=None,
        metavar="LIST",
        help=f"echo peers (default: {','.join(PEERS)})",
    )
    parser.add_argument(
        "--idle",
        type=_positive_int,
        default=None,
        metavar="N",
        help="overhead: idle fds (default: 1000; select: at most 500)",
    )
    parser.add_argument(
        "--scaling-fds",
        type=_positive_ints,
        default=None,
        metavar="LIST",
        help="scaling: idle fd counts (default: 10,30,100,300,1000,3000,10000)",
    )
    parser.add_argument(
        "--connections",
        type=_positive_ints,
        default=None,
        metavar="LIST",
        help="echo: connection counts, at the reference size (default: 1,10,50,500,5000)",
    )
    parser.add_argument(
        "--sizes",
        type=_positive_ints,
        default=None,
        metavar="LIST",
        help="echo: message sizes in bytes, at the reference count (default: 64,1024,16384,65536)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        help="echo/workers: measured seconds per round (default: 1)",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "c", "python"),
        default="auto",
        help="echo/workers load generator: C (compiled on first use with $CC), Python, "
        "or auto: C where a compiler is found (default: auto)",
    )
    parser.add_argument(
        "--memory-connections",
        type=_positive_ints,
        default=None,
        metavar="LIST",
        help="memory: held connection counts (default: 1000,5000,10000)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_ints,
        default=None,
        metavar="LIST",
        help="workers: process counts (default: 1 to the number of CPUs)",
    )
    parser.add_argument(
        "--json",
        default="pollkit-bench.json",
        metavar="PATH",
        help="where to write every figure (default: pollkit-bench.json)",
    )
    parser.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=run)


def add_commands(subparsers: Any) -> None:
    """Add ``bench`` to the ``pollkit`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="measure the drivers, the raw calls and the echo peers side by side",
        description=(__doc__ or "").split("\n\n")[0],
    )
    configure_parser(parser)


@dataclass
class Settings:
    """Every knob of a run, after ``--quick`` and the overrides are applied."""

    overhead_rounds: int = 200
    overhead_round_seconds: float = 0.002
    overhead_idle: int = 1000
    scaling_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000, 10000)
    scaling_rounds: int = 30
    echo_connections: tuple[int, ...] = (1, 10, 50, 500, 5000)
    echo_sizes: tuple[int, ...] = (64, 1024, 16384, 65536)
    # CPU per message differs by a few percent between contenders and by more
    # between rounds on a shared machine: seven rounds make the median hold.
    echo_rounds: int = 7
    # At the targets' point (50 x 1 KiB) pollkit, the raw loop and uvloop sit
    # within a few percent of each other: more rounds there.
    echo_target_rounds: int = 15
    echo_warmup: float = 0.3
    echo_duration: float = 1.0
    memory_connections: tuple[int, ...] = (1000, 5000, 10000)
    memory_warm: int = 50
    memory_rounds: int = 1
    workers: tuple[int, ...] = ()
    workers_rounds: int = 3

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        settings = cls(workers=tuple(range(1, max(2, os.cpu_count() or 1) + 1)))
        if args.quick:
            settings = cls(
                overhead_rounds=20,
                overhead_round_seconds=0.001,
                scaling_sizes=(10, 100, 1000),
                scaling_rounds=5,
                echo_connections=(10,),
                echo_sizes=(1024,),
                echo_rounds=1,
                echo_target_rounds=1,
                echo_warmup=0.1,
                echo_duration=0.3,
                memory_connections=(200,),
                memory_warm=20,
                workers=(1, 2),
                workers_rounds=1,
            )
        if args.rounds is not None:
            settings.overhead_rounds = settings.scaling_rounds = args.rounds
            settings.echo_rounds = settings.echo_target_rounds = args.rounds
            settings.workers_rounds = args.rounds
        if args.memory_rounds is not None:
            settings.memory_rounds = args.memory_rounds
        if args.idle is not None:
            settings.overhead_idle = args.idle
        if args.scaling_fds is not None:
            settings.scaling_sizes = tuple(args.scaling_fds)
        if args.connections is not None:
            settings.echo_connections = tuple(args.connections)
        if args.sizes is not None:
            settings.echo_sizes = tuple(args.sizes)
        if args.duration is not None:
            settings.echo_duration = args.duration
        if args.memory_connections is not None:
            settings.memory_connections = tuple(args.memory_connections)
            settings.memory_warm = min(settings.memory_warm, min(args.memory_connections) // 2)
        if args.workers is not None:
            settings.workers = tuple(args.workers)
        return settings

    def echo_points(self) -> list[tuple[int, int]]:
        """The cross through the reference point: each count at one size, each size at one count."""
        size = 1024 if 1024 in self.echo_sizes else self.echo_sizes[0]
        count = 50 if 50 in self.echo_connections else self.echo_connections[0]
        points = [(c, size) for c in self.echo_connections]
        points += [(count, s) for s in self.echo_sizes if (count, s) not in points]
        return points


def run(args: argparse.Namespace) -> int:
    """Run the studies ``args`` asks for; print tables; write JSON (and plots)."""
    from .report import Progress, machine_info, write_json

    studies = list(dict.fromkeys(args.studies)) or list(STUDIES)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        print(
            "pollkit bench: error: --plot needs matplotlib: pip install 'pollkit[bench]' "
            "(or run without --plot for tables only)",
            file=sys.stderr,
        )
        return 2
    settings = Settings.from_args(args)
    progress = Progress(enabled=not args.quiet)
    backends = list(args.backends) if args.backends is not None else list(_DRIVERS)
    document: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {**settings.__dict__, "backends": backends, "studies": studies},
        "studies": {},
    }
    started = time.monotonic()
    for study in studies:
        runner = _RUNNERS[study]
        tables = runner(args, settings, backends, progress, document["studies"])
        for table in tables:
            print(table, flush=True)
            print(flush=True)
        write_json(args.json, document)  # after each study, so a long run keeps what it did
    document["targets"] = targets = _targets(document["studies"])
    document["seconds"] = time.monotonic() - started
    if targets:
        print(_targets_table(targets))
    if document["machine"].get("loadavg") is not None:
        document["machine"]["loadavg_end"] = list(os.getloadavg())
    path = write_json(args.json, document)
    progress.note(f"wrote {path} ({document['seconds']:.0f} s)")
    if args.plot is not None:
        from .plot import plot_all

        for written in plot_all(document, args.plot):
            progress.note(f"wrote {written}")
    return 0


Runner = Callable[[argparse.Namespace, Settings, list[str], Any, dict[str, Any]], list[str]]


def _run_overhead(
    args: argparse.Namespace,
    settings: Settings,
    backends: list[str],
    progress: Any,
    out: dict[str, Any],
) -> list[str]:
    from .overhead import overhead_table, run_overhead

    results = run_overhead(
        drivers=backends,
        idle=settings.overhead_idle,
        select_idle=min(settings.overhead_idle, 500),
        rounds=settings.overhead_rounds,
        round_seconds=settings.overhead_round_seconds,
        progress=progress,
    )
    out["overhead"] = {"cases": [case.as_dict() for case in results]}
    return [
        "poll(0) overhead: ns per call (median of rounds); ratios are medians of each "
        "round's ratio to raw [p25-p75]",
        overhead_table(results),
    ]


def _run_scaling(
    args: argparse.Namespace,
    settings: Settings,
    backends: list[str],
    progress: Any,
    out: dict[str, Any],
) -> list[str]:
    from .overhead import run_scaling, scaling_table

    results = run_scaling(
        drivers=backends,
        sizes=settings.scaling_sizes,
        rounds=settings.scaling_rounds,
        progress=progress,
    )
    out["scaling"] = {"cases": [case.as_dict() for case in results]}
    return ["poll(0) with N idle fds and 1 ready: ns per call", scaling_table(results)]


def _contenders(args: argparse.Namespace, backends: list[str]) -> tuple[list[Any], dict[str, str]]:
    from .echo import DEFAULT_PEERS, echo_contenders

    peers = list(args.peers) if args.peers is not None else list(DEFAULT_PEERS)
    return echo_contenders(backends, peers)


def _run_echo(
    args: argparse.Namespace,
    settings: Settings,
    backends: list[str],
    progress: Any,
    out: dict[str, Any],
) -> list[str]:
    from .echo import echo_table, resolve_generator, run_echo

    contenders, skipped = _contenders(args, backends)
    _, generator = resolve_generator(args.generator)
    progress.note(f"echo: load generator: {generator}")
    points = run_echo(
        contenders,
        settings.echo_points(),
        rounds=settings.echo_rounds,
        target_rounds=settings.echo_target_rounds,
        warmup=settings.echo_warmup,
        duration=settings.echo_duration,
        generator=args.generator,
        progress=progress,
    )
    out["echo"] = {
        "generator": generator,
        "contenders": {c.name: {"argv": list(c.argv), "via": c.via} for c in contenders},
        "skipped": skipped,
        "points": [point.as_dict() for point in points],
    }
    lines = [
        "echo: closed-loop ping-pong; server CPU per message from /proc "
        "(median [p25-p75] of rounds); client util near 1.0 means the load generator was the limit",
        echo_table(points),
    ]
    lines += [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    return lines


def _run_memory(
    args: argparse.Namespace,
    settings: Settings,
    backends: list[str],
    progress: Any,
    out: dict[str, Any],
) -> list[str]:
    from .echo import memory_table, run_memory

    contenders, skipped = _contenders(args, backends)
    results = run_memory(
        contenders,
        settings.memory_connections,
        rounds=settings.memory_rounds,
        warm=settings.memory_warm,
        progress=progress,
    )
    out["memory"] = {
        "skipped": skipped,
        "results": [result.as_dict() for result in results],
    }
    return [
        f"memory: server bytes per held idle connection (growth from {settings.memory_warm} "
        "held connections to N, divided by the difference)",
        memory_table(results),
    ]


def _run_workers(
    args: argparse.Namespace,
    settings: Settings,
    backends: list[str],
    progress: Any,
    out: dict[str, Any],
) -> list[str]:
    from .echo import echo_table, resolve_generator, run_echo, workers_contenders

    _, generator = resolve_generator(args.generator)
    backend = backends[0] if backends else "epoll"
    contenders = workers_contenders(backend, settings.workers)
    points = run_echo(
        contenders,
        [(50, 1024)],
        rounds=settings.workers_rounds,
        warmup=settings.echo_warmup,
        duration=settings.echo_duration,
        pin=False,
        server_tree=True,
        study="workers",
        generator=args.generator,
        progress=progress,
    )
    cpus = os.cpu_count() or 1
    out["workers"] = {
        "backend": backend,
        "cpus": cpus,
        "generator": generator,
        "points": [p.as_dict() for p in points],
    }
    return [
        f"workers: pollkit echo --workers N on {backend}, 50 connections x 1 KiB, nothing pinned; "
        f"this machine has {cpus} CPUs and the load generator needs one of them, so "
        "throughput cannot scale past what the remaining CPU time allows",
        echo_table(points),
    ]


_RUNNERS: dict[str, Runner] = {
    "overhead": _run_overhead,
    "scaling": _run_scaling,
    "echo": _run_echo,
    "memory": _run_memory,
    "workers": _run_workers,
}


def _targets(studies: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues' targets that this run measured, each with its figure and verdict."""
    from .echo import (
        CPU_TARGET_POINT,
        CPU_TARGET_RATIO,
        MEMORY_TARGET_BYTES,
        MEMORY_TARGET_CONNECTIONS,
        paired_ratio,
    )

    found: list[dict[str, Any]] = []
    for case in studies.get("overhead", {}).get("cases", []):
        ratio = case["ratio_to_raw"].get("pollkit")
        if case["target_pollkit_ratio"] is not None and ratio is not None:
            found.append(
                {
                    "target": f"poll(0) pollkit/raw, {case['driver']}, {case['ready']} ready",
                    "limit": case["target_pollkit_ratio"],
                    "measured": ratio["median"],
                    "spread": [ratio["p25"], ratio["p75"]],
                    "met": ratio["median"] <= case["target_pollkit_ratio"],
                }
            )
    for point in studies.get("echo", {}).get("points", []):
        if (point["connections"], point["size"]) != CPU_TARGET_POINT:
            continue
        mine = point["contenders"].get("pollkit-epoll")
        if mine is None:
            continue
        ratio = mine.get("cpu_per_message_ratio_to_raw")
        if ratio is not None:
            found.append(
                {
                    "target": "echo 50x1KiB: pollkit-epoll / raw-epoll CPU per message",
                    "limit": CPU_TARGET_RATIO,
                    "measured": ratio["median"],
                    "spread": [ratio["p25"], ratio["p75"]],
                    "met": ratio["median"] <= CPU_TARGET_RATIO,
                }
            )
        uvloop = point["contenders"].get("uvloop-protocol")
        versus = None if uvloop is None else paired_ratio(mine["rounds"], uvloop["rounds"])
        if versus is not None:
            # Paired like every other ratio here: round i of pollkit against
            # round i of uvloop, which ran next to it.
            found.append(
                {
                    "target": "echo 50x1KiB: pollkit-epoll / uvloop CPU per message, below 1",
                    "limit": 1.0,
                    "measured": versus.median,
                    "spread": [versus.p25, versus.p75],
                    "met": versus.median < 1.0,
                }
            )
    for result in studies.get("memory", {}).get("results", []):
        rss = result.get("rss_bytes_per_connection")
        if (
            result["contender"] == "pollkit-epoll"
            and result["connections"] == MEMORY_TARGET_CONNECTIONS
            and rss is not None
        ):
            found.append(
                {
                    "target": f"memory: pollkit-epoll bytes per idle connection at "
                    f"{MEMORY_TARGET_CONNECTIONS}",
                    "limit": MEMORY_TARGET_BYTES,
                    "measured": rss["median"],
                    "spread": [rss["p25"], rss["p75"]],
                    "met": rss["median"] <= MEMORY_TARGET_BYTES,
                }
            )
    return found


def _targets_table(targets: list[dict[str, Any]]) -> str:
    from .report import format_table

    rows = [
        [
            t["target"],
            f"{t['limit']:.3f}" if t["limit"] < 100 else f"{t['limit']:.0f}",
            f"{t['measured']:.3f}" if t["measured"] < 100 else f"{t['measured']:.0f}",
            f"[{t['spread'][0]:.3f}-{t['spread'][1]:.3f}]"
            if t["measured"] < 100
            else f"[{t['spread'][0]:.0f}-{t['spread'][1]:.0f}]",
            "met" if t["met"] else "MISSED",
        ]
        for t in targets
    ]
    return "targets\n" + format_table(["target", "limit", "measured", "[p25-p75]", ""], rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``pollkit bench`` on its own, as the scripts in ``benchmarks/`` call it."""
    from ..cli import ArgumentParser

    parser = ArgumentParser(prog="pollkit bench", description=(__doc__ or "").split("\n\n")[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
