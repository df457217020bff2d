"""``poll(0)`` against the raw call beneath it: the overhead and scaling studies.

Each case watches ``idle`` never-ready fds and ``ready`` always-ready ones
(socket pairs, a byte unread in each ready one), so every call reports the
same fds.  ``raw`` is the ``select`` module's own call, ``pollkit`` the
driver's ``poll(0)`` (``debug:epoll`` measures the wrapper); ``benchmarks/``
adds contenders through ``extra``.  A round times a fixed number of calls of
each, in serpentine order, garbage collector off; the loop's own cost is in
every figure alike, as with ``timeit``.
"""

from __future__ import annotations

import gc
import itertools
import select
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from .._backends import open_poller, parse_backend
from .._events import Events
from .._select import FD_SETSIZE
from .echo import raise_fd_limit
from .harness import BenchError, Progress, cell, judge, serpentine, summarize, table, verdict

__all__ = ["TARGETS", "Contender", "describe", "run", "socket_fds", "timing_loop"]

#: How long the raw call's turn in a round takes; the others make as many calls.
ROUND_SECONDS = 0.002

#: pollkit/raw budgets by number of ready fds: a longer call leaves less excuse.
TARGETS: dict[int, float] = {1: 1.15, 64: 1.05}


class Contender(NamedTuple):
    """A timing loop (calls -> ns), a count of what ``poll(0)`` reports, and a closer."""

    timed: Callable[[int], int]
    count_ready: Callable[[], int]
    close: Callable[[], None]


#: Builds a contender of ``extra`` from the driver name and the fds to watch.
Build = Callable[[str, list[int]], Contender]


def socket_fds(idle: int, ready: int) -> tuple[list[socket.socket], list[int]]:
    """Sockets to close, and fds to watch: ``idle`` never readable, then ``ready`` always so."""
    raise_fd_limit(idle + 2 * ready + 256)
    pairs = [socket.socketpair() for _ in range((idle + 1) // 2 + ready)]
    quiet, busy = pairs[: len(pairs) - ready], pairs[len(pairs) - ready :]
    for writer, _ in busy:
        writer.send(b"x")  # never read: the other end stays readable
    for sock in (sockets := [s for pair in pairs for s in pair]):
        sock.setblocking(False)  # as a real loop's are (and debug: asks)
    fds = [s.fileno() for pair in quiet for s in pair][:idle] + [r.fileno() for _, r in busy]
    return sockets, fds


def timing_loop(label: str, source: str, **names: Any) -> Callable[[int], int]:
    """A loop (calls -> ns) running ``source`` with ``names`` as locals, compiled afresh.

    CPython specialises call sites per code object: one loop shared by a
    builtin and a Python method would keep flipping its specialisation.
    """
    params = "".join(f", {name}={name}" for name in names)
    code = (
        f"def timed(calls, clock=clock, repeat=repeat{params}):\n"
        f"    start = clock()\n    for _ in repeat(None, calls):\n        {source}\n"
        "    return clock() - start\n"
    )
    namespace: dict[str, Any] = {"clock": time.perf_counter_ns, "repeat": itertools.repeat, **names}
    exec(compile(code, f"<poll loop: {label}>", "exec"), namespace)
    timed: Callable[[int], int] = namespace["timed"]
    return timed


def _raw(driver: str, fds: list[int]) -> Contender:
    if driver == "select":  # the one raw call that takes its fd lists on every call
        loop = timing_loop("select raw", "call(fds, no, no, 0)", call=select.select, fds=fds, no=[])
        return Contender(loop, lambda: len(select.select(fds, [], [], 0)[0]), lambda: None)
    kernel = getattr(select, driver)()  # select.epoll() or select.poll()
    for fd in fds:
        kernel.register(fd, select.POLLIN)  # == EPOLLIN
    loop = timing_loop(f"{driver} raw", "obj.poll(0)", obj=kernel)
    return Contender(loop, lambda: len(kernel.poll(0)), getattr(kernel, "close", lambda: None))


def _pollkit(spec: str, driver: str, fds: list[int]) -> Contender:
    poller = open_poller(spec)
    for fd in fds:
        poller.register(fd, Events.READ)

    def close() -> None:
        for fd in fds:
            poller.unregister(fd)  # before close, as debug: asks
        poller.close()

    loop = timing_loop(f"{spec} pollkit", "obj.poll(0)", obj=poller)
    return Contender(loop, lambda: len(poller.poll(0)), close)


def _case(spec: str, idle: int, ready: int, rounds: int, extra: Mapping[str, Build],
          progress: Progress) -> dict[str, Any]:  # fmt: skip
    prefixes, driver = parse_backend(spec)
    case: dict[str, Any] = {"driver": spec, "idle": idle, "ready": ready, "skipped": None}
    case["target_pollkit_ratio"] = None if prefixes else TARGETS.get(ready)  # plain drivers' only
    if driver == "select" and idle + 2 * ready + 64 >= FD_SETSIZE:  # fds 0-63: the process's own
        return case | {"skipped": f"select cannot watch fds >= FD_SETSIZE ({FD_SETSIZE})"}
    sockets, fds = socket_fds(idle, ready)
    built: dict[str, Contender] = {}
    try:
        builders: dict[str, Build] = {"raw": _raw, "pollkit": partial(_pollkit, spec), **extra}
        for name, build in builders.items():
            built[name] = build(driver, fds)
            exact = name != "pollkit" or "chaos" not in prefixes  # chaos: withholds on purpose
            if (seen := built[name].count_ready()) != ready and exact:
                raise BenchError(f"{spec} {name}: poll(0) reported {seen} fds, not {ready}")
        calls = 10
        while (elapsed := built["raw"].timed(calls)) < ROUND_SECONDS * 1e9 and calls < 10**7:
            calls *= 4  # until one round's time: enough to extrapolate from
        calls = max(10, int(ROUND_SECONDS * 1e9 * calls / elapsed))
        samples: dict[str, list[float]] = {name: [] for name in built}
        for contender in built.values():
            contender.timed(calls)  # warm up: specialise each loop, fault in every page
        gc.collect()
        gc.disable()  # no collection may land in one contender's turn
        for number in range(rounds):
            for name, contender in serpentine(list(built.items()), number):
                samples[name].append(contender.timed(calls) / calls)
            progress.step(f"{spec} {idle}+{ready}, round {number + 1}/{rounds}")
    finally:
        gc.enable()
        for contender in built.values():
            contender.close()
        for sock in sockets:
            sock.close()
    case |= {"calls_per_round": calls, "rounds": rounds}
    case["ns_per_call"] = {name: summarize(values) for name, values in samples.items()}
    case["ratio_to_raw"] = {
        name: summarize([v / r for v, r in zip(values, samples["raw"], strict=True)])
        for name, values in samples.items()
        if name != "raw"
    }
    return case


def run(study: str, specs: Sequence[str], cases: Sequence[tuple[int, int]], rounds: int,
        progress: Progress, extra: Mapping[str, Build] = {},
        select_idle: int | None = None) -> dict[str, Any]:  # fmt: skip
    """``study`` (``overhead`` or ``scaling``): each spec at each ``(idle, ready)`` case.

    ``select_idle`` caps select's idle fds; cases select cannot watch are skipped, with the
    reason.  Raises ``BenchError`` if a contender does not report the ``ready`` fds.
    """
    progress.start(study, len(specs) * len(cases) * rounds)
    found = []
    for spec, (idle, ready) in itertools.product(specs, cases):
        if parse_backend(spec).driver == "select":
            idle = min(idle, select_idle or idle)
        found.append(_case(spec, idle, ready, rounds, extra, progress))
    return describe(study, {"cases": found})


def describe(study: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its table and (for ``overhead``) its judged targets filled in."""
    cases = data["cases"]
    names = list(dict.fromkeys(n for c in cases if not c["skipped"] for n in c["ns_per_call"]))
    others = names[1:]  # raw comes first: the yardstick
    rows, targets = [], []
    for case in cases:
        head = [case["driver"], case["idle"], case["ready"]]
        if case["skipped"]:
            rows.append([*head, "skipped: " + case["skipped"]])
            continue
        ns, ratios = case["ns_per_call"], case["ratio_to_raw"]
        row = [*head, *(f"{ns[n]['median']:.0f}" if n in ns else "-" for n in names)]
        row += [cell(ratios.get(n), digits=3) for n in others]
        limit = case["target_pollkit_ratio"] if study == "overhead" else None
        if limit is not None:
            what = f"poll(0) pollkit/raw, {case['driver']}, {case['ready']} ready"
            judged = judge(what, ratios.get("pollkit"), limit)
            targets += [judged] if judged else []
            row += [f"<= {limit:g}", verdict(judged)]
        rows.append(row)
    headers = ["driver", "idle", "ready", *(f"{n} ns" for n in names)]
    headers += [f"{n}/raw" for n in others] + (["target", ""] if study == "overhead" else [])
    title = f"{study}: ns per poll(0), medians of rounds; ratios paired by round [p25-p75]"
    return data | {"table": table(title, headers, rows), "targets": targets}
