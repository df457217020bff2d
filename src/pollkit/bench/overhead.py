"""What one ``poll(0)`` costs: pollkit's drivers beside the raw calls and stdlib ``selectors``.

Each case watches ``idle`` fds that never become ready plus ``ready`` fds that
stay readable (a byte waits in each and is never read), so every call returns
the same ``ready`` events and level triggering is exercised on each call.  All
fds are ends of AF_UNIX socket pairs; idle pairs have both ends watched.

Per driver, four contenders watch the same fds:

* ``raw``: the ``select`` module's own call (``epoll.poll(0)``,
  ``poll.poll(0)``, ``select.select(r, [], [], 0)``), the floor;
* ``pollkit``: the pollkit driver's ``poll(0)``;
* ``selectors``: stdlib ``EpollSelector``/``PollSelector``/``SelectSelector``
  ``.select(0)``;
* ``wrapper``: the least a Python method with pollkit's result contract can
  cost (one method call around the raw call, and for select the zip into
  ``(fd, mask)`` pairs): the yardstick for "nothing per event, almost nothing
  per call".

Each round times a fixed number of calls of every contender in turn, in
serpentine order (A B C D, D C B A, ...), with ``time.perf_counter_ns`` and the
garbage collector off; the figures are medians over rounds and the ratios are
medians of each round's own ratio to ``raw``, so a burst of load on a shared
machine skews a round, not the result.  The loop's own cost (well under 1 % of a call) is
included for every contender alike, as ``timeit`` does.
"""

from __future__ import annotations

import gc
import select
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from .._base import Poller
from .._epoll import EpollPoller
from .._poll import PollPoller
from .._select import FD_SETSIZE, SelectPoller
from .loadgen import raise_fd_limit
from .report import Progress, format_table
from .stats import Spread, summarize

__all__ = [
    "CONTENDERS",
    "DRIVERS",
    "TARGETS",
    "CaseResult",
    "FdSet",
    "measure_case",
    "overhead_table",
    "run_overhead",
    "run_scaling",
    "scaling_table",
]

DRIVERS = ("epoll", "poll", "select")
CONTENDERS = ("raw", "pollkit", "selectors", "wrapper")

#: The budget for pollkit/raw, by number of ready fds (issue 2).
TARGETS: dict[int, float] = {1: 1.15, 64: 1.05}

_READ = 1  # Events.READ == POLLIN == EPOLLIN

Timer = Callable[[int], int]


class FdSet:
    """``idle`` never-ready fds and ``ready`` always-readable fds, all socket-pair ends."""

    def __init__(self, idle: int, ready: int) -> None:
        if idle < 0 or ready < 0:
            raise ValueError(f"idle and ready must be >= 0, not {idle!r} and {ready!r}")
        raise_fd_limit(idle + 2 * ready + 256)  # idle pairs share 2 fds; ready pairs use 2 each
        self._sockets: list[socket.socket] = []
        self.idle: list[int] = []
        self.ready: list[int] = []
        try:
            while len(self.idle) < idle:
                a, b = self._pair()
                self.idle.append(a.fileno())
                if len(self.idle) < idle:
                    self.idle.append(b.fileno())
            for _ in range(ready):
                writer, reader = self._pair()
                writer.send(b"x")  # never read: the reader stays readable
                self.ready.append(reader.fileno())
        except BaseException:
            self.close()
            raise

    def _pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        self._sockets += (a, b)
        return a, b

    @property
    def fds(self) -> list[int]:
        return self.idle + self.ready

    @property
    def max_fd(self) -> int:
        return max(s.fileno() for s in self._sockets) if self._sockets else -1

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> FdSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Each contender gets its own freshly compiled timing loop: CPython specialises
# call sites per code object, and one loop shared by a builtin method and a
# Python method would flip its specialisation between them.
# Every contender is called the way application code calls it, as a method
# (``poller.poll(0)``, ``epoll.poll(0)``): CPython 3.11 specialises that call
# site, while calling a stored bound method of a Python function with default
# arguments takes a slower generic path that would tax Python-level
# contenders alone.
_METHOD_LOOP = """
def timed(calls, _clock=clock, _repeat=repeat, _obj=obj, _arg=arg):
    start = _clock()
    for _ in _repeat(None, calls):
        _obj.{method}(_arg)
    return _clock() - start
"""

_SELECT_LOOP = """
def timed(calls, _clock=clock, _repeat=repeat, _call=call, _r=r, _w=w, _x=x):
    start = _clock()
    for _ in _repeat(None, calls):
        _call(_r, _w, _x, 0)
    return _clock() - start
"""


def method_loop(label: str, obj: Any, method: str, arg: Any = 0) -> Timer:
    """A timing loop that calls ``obj.method(arg)``."""
    return _compile_loop(_METHOD_LOOP.format(method=method), label, obj=obj, arg=arg)


def _compile_loop(source: str, label: str, **names: Any) -> Timer:
    namespace: dict[str, Any] = {"clock": time.perf_counter_ns, "repeat": repeat, **names}
    exec(compile(source, f"<poll loop: {label}>", "exec"), namespace)  # a fresh code object
    timed: Timer = namespace["timed"]
    return timed


_POLLKIT_DRIVERS: dict[str, Callable[[], Poller]] = {
    "epoll": EpollPoller,
    "poll": PollPoller,
    "select": SelectPoller,
}


class _EpollWrapper:
    """A bare method around ``epoll.poll``: the cheapest wrapper possible.

    It calls the method on the epoll object (no stored bound method, which
    CPython 3.11 calls more slowly).
    """

    def __init__(self, epoll: select.epoll) -> None:
        self._epoll = epoll

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout)


class _PollWrapper:
    """A bare method around ``poll.poll``, converting seconds to milliseconds."""

    def __init__(self, poll: select.poll) -> None:
        self._poll = poll.poll

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        result: list[tuple[int, int]] = self._poll(None if timeout is None else timeout * 1000.0)
        return result


class _SelectWrapper:
    """A bare method around ``select.select`` that returns ``(fd, READ)`` pairs."""

    def __init__(self, readers: list[int]) -> None:
        self._readers = readers
        self._writers: list[int] = []
        self._urgent: list[int] = []
        self._select = select.select

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        readable, _, _ = self._select(self._readers, self._writers, self._urgent, timeout)
        return list(zip(readable, repeat(_READ)))


@dataclass
class _Contender:
    timed: Timer
    count_ready: Callable[[], int]
    close: Callable[[], None] = lambda: None


def _contenders(driver: str, fds: Sequence[int], names: Iterable[str]) -> dict[str, _Contender]:
    """Build each named contender for ``driver``, every one watching ``fds`` for READ."""
    built: dict[str, _Contender] = {}
    try:
        for name in names:
            built[name] = _build(driver, name, list(fds))
    except BaseException:
        for contender in built.values():
            contender.close()
        raise
    return built


def _build(driver: str, name: str, fds: list[int]) -> _Contender:
    label = f"{driver} {name}"
    if name == "pollkit":
        poller = _POLLKIT_DRIVERS[driver]()
        for fd in fds:
            poller.register(fd, _READ)
        return _Contender(
            method_loop(label, poller, "poll"),
            lambda: len(poller.poll(0)),
            poller.close,
        )
    if name == "selectors":
        chosen: selectors.BaseSelector = {
            "epoll": selectors.EpollSelector,
            "poll": selectors.PollSelector,
            "select": selectors.SelectSelector,
        }[driver]()
        for fd in fds:
            chosen.register(fd, selectors.EVENT_READ)
        return _Contender(
            method_loop(label, chosen, "select"),
            lambda: len(chosen.select(0)),
            chosen.close,
        )
    if driver == "select":
        readers = list(fds)
        if name == "raw":
            return _Contender(
                _compile_loop(_SELECT_LOOP, label, call=select.select, r=readers, w=[], x=[]),
                lambda: len(select.select(readers, [], [], 0)[0]),
            )
        wrapper = _SelectWrapper(readers)
        return _Contender(
            method_loop(label, wrapper, "poll"),
            lambda: len(wrapper.poll(0)),
        )
    if driver == "epoll":
        epoll = select.epoll()
        for fd in fds:
            epoll.register(fd, select.EPOLLIN)
        epoll_contender: Any = epoll if name == "raw" else _EpollWrapper(epoll)
        return _Contender(
            method_loop(label, epoll_contender, "poll"),
            lambda: len(epoll_contender.poll(0)),
            epoll.close,
        )
    if driver == "poll":
        kernel_poll = select.poll()
        for fd in fds:
            kernel_poll.register(fd, select.POLLIN)
        poll_contender: Any = kernel_poll if name == "raw" else _PollWrapper(kernel_poll)
        return _Contender(
            method_loop(label, poll_contender, "poll"),
            lambda: len(poll_contender.poll(0)),
        )
    raise ValueError(f"unknown driver {driver!r} or contender {name!r}")


@dataclass
class CaseResult:
    """One driver with ``idle`` + ``ready`` fds: each contender's ns per call, ratios to raw."""

    driver: str
    idle: int
    ready: int
    calls_per_round: int = 0
    rounds: int = 0
    ns_per_call: dict[str, Spread] = field(default_factory=dict)
    #: Medians (and spread) of each round's ``contender / raw`` ratio.
    ratio_to_raw: dict[str, Spread] = field(default_factory=dict)
    target: float | None = None
    skipped: str | None = None

    def summarize(self, calls_per_round: int, samples: dict[str, list[float]]) -> None:
        """Fill in the figures from each contender's ns per call, round by round.

        ``samples`` must hold ``"raw"``; round *i* of every contender ran in
        the same alternating round, so ratios are taken round by round.
        """
        self.calls_per_round = calls_per_round
        self.rounds = len(samples["raw"])
        self.ns_per_call = {name: summarize(values) for name, values in samples.items()}
        raw = samples["raw"]
        self.ratio_to_raw = {
            name: summarize([v / r for v, r in zip(values, raw, strict=False)])
            for name, values in samples.items()
            if name != "raw"
        }

    @property
    def passed(self) -> bool | None:
        """Whether pollkit/raw met the target; ``None`` without a target or a result."""
        if self.target is None or "pollkit" not in self.ratio_to_raw:
            return None
        return self.ratio_to_raw["pollkit"].median <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "idle": self.idle,
            "ready": self.ready,
            "calls_per_round": self.calls_per_round,
            "rounds": self.rounds,
            "ns_per_call": {k: v.as_dict() for k, v in self.ns_per_call.items()},
            "ratio_to_raw": {k: v.as_dict() for k, v in self.ratio_to_raw.items()},
            "target_pollkit_ratio": self.target,
            "passed": self.passed,
            "skipped": self.skipped,
        }


def measure_case(
    driver: str,
    idle: int,
    ready: int,
    *,
    contenders: Sequence[str] = CONTENDERS,
    rounds: int = 200,
    round_seconds: float = 0.002,
    progress: Progress | None = None,
) -> CaseResult:
    """Time ``poll(0)`` of each contender on ``driver`` in ``rounds`` alternating rounds.

    ``round_seconds`` sizes one contender's turn: the number of calls per
    turn is fixed so that ``raw`` takes about that long.  A case that select
    cannot watch (an fd at or above ``FD_SETSIZE``) comes back with
    ``skipped`` set.  Raises ``ValueError`` for an unknown driver or
    contender, or if ``contenders`` lacks ``"raw"``; ``RuntimeError`` if a
    contender does not report exactly the ``ready`` fds.
    """
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; choose from {', '.join(DRIVERS)}")
    unknown = [name for name in contenders if name not in CONTENDERS]
    if unknown or "raw" not in contenders:
        raise ValueError(
            f"contenders must include 'raw' and come from {', '.join(CONTENDERS)}, "
            f"not {list(contenders)!r}"
        )
    if rounds < 1 or round_seconds <= 0:
        raise ValueError(
            f"rounds must be >= 1 and round_seconds > 0, not {rounds!r}, {round_seconds!r}"
        )
    result = CaseResult(driver, idle, ready, target=TARGETS.get(ready))
    with FdSet(idle, ready) as fdset:
        if driver == "select" and fdset.max_fd >= FD_SETSIZE - 8:  # leave room for the pollers' own
            result.skipped = f"fd {fdset.max_fd} is too close to FD_SETSIZE ({FD_SETSIZE})"
            return result
        built = _contenders(driver, fdset.fds, contenders)
        try:
            for name, contender in built.items():
                seen = contender.count_ready()
                if seen != ready:
                    raise RuntimeError(
                        f"{driver} {name}: poll(0) reported {seen} ready fds, expected {ready}"
                    )
            calls = _calibrate(built["raw"].timed, round_seconds)
            samples = _alternate(built, calls, rounds, progress, f"{driver} {ready} ready")
        finally:
            for contender in built.values():
                contender.close()
    result.summarize(calls, samples)
    return result


def _calibrate(timed: Timer, round_seconds: float) -> int:
    """How many calls take about ``round_seconds`` (at least 10)."""
    calls = 10
    while True:
        elapsed = timed(calls)
        if elapsed >= 2_000_000 or calls >= 10_000_000:  # 2 ms is enough to extrapolate
            break
        calls *= 4
    per_call = elapsed / calls
    return max(10, int(round_seconds * 1e9 / per_call))


def _alternate(
    built: dict[str, _Contender],
    calls: int,
    rounds: int,
    progress: Progress | None,
    label: str,
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in built}
    order = list(built.items())
    for _, contender in order:  # warm up: specialise each loop, fault in every page
        contender.timed(calls)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # no collection may land in one contender's turn
    try:
        for round_number in range(rounds):
            # Serpentine order (A B C D, then D C B A): each contender runs as
            # often early as late in a round, so no position is favoured.
            for name, contender in order if round_number % 2 == 0 else order[::-1]:
                samples[name].append(contender.timed(calls) / calls)
            if progress is not None:
                progress.step(f"{label}, round {round_number + 1}/{rounds}")
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def run_overhead(
    *,
    drivers: Sequence[str] = DRIVERS,
    idle: int = 1000,
    select_idle: int = 500,
    ready_counts: Sequence[int] = (1, 64),
    rounds: int = 200,
    round_seconds: float = 0.002,
    contenders: Sequence[str] = CONTENDERS,
    progress: Progress | None = None,
) -> list[CaseResult]:
    """The poll(0) overhead study (issue 2): every driver, each ready count, all contenders.

    ``select_idle`` replaces ``idle`` on the select driver, which cannot watch
    fds at or above ``FD_SETSIZE``.
    """
    if progress is not None:
        progress.start("overhead", len(drivers) * len(ready_counts) * rounds)
    return [
        measure_case(
            driver,
            select_idle if driver == "select" else idle,
            ready,
            contenders=contenders,
            rounds=rounds,
            round_seconds=round_seconds,
            progress=progress,
        )
        for driver in drivers
        for ready in ready_counts
    ]


#: fd counts of the scaling study: a log scale from 10 to 10,000.
SCALING_SIZES = (10, 30, 100, 300, 1000, 3000, 10000)


def run_scaling(
    *,
    drivers: Sequence[str] = DRIVERS,
    sizes: Sequence[int] = SCALING_SIZES,
    rounds: int = 30,
    round_seconds: float = 0.002,
    contenders: Sequence[str] = ("raw", "pollkit", "selectors"),
    progress: Progress | None = None,
) -> list[CaseResult]:
    """Cost of ``poll(0)`` with N idle fds and 1 ready fd, for each N and driver.

    Sizes select cannot watch come back with ``skipped`` set (FD_SETSIZE).
    """
    if progress is not None:
        progress.start("scaling", len(drivers) * len(sizes) * rounds)
    results = []
    for driver in drivers:
        for size in sizes:
            if driver == "select" and size + 16 >= FD_SETSIZE:
                skipped = CaseResult(driver, size, 1)
                skipped.skipped = f"select cannot watch fds >= FD_SETSIZE ({FD_SETSIZE})"
                results.append(skipped)
                if progress is not None:
                    for _ in range(rounds):
                        progress.step(f"{driver} N={size} skipped")
                continue
            results.append(
                measure_case(
                    driver,
                    size,
                    1,
                    contenders=contenders,
                    rounds=rounds,
                    round_seconds=round_seconds,
                    progress=progress,
                )
            )
    return results


def _ratio_cell(spread: Spread | None) -> str:
    if spread is None:
        return "-"
    return f"{spread.median:.3f} [{spread.p25:.3f}-{spread.p75:.3f}]"


def overhead_table(results: Sequence[CaseResult]) -> str:
    """The overhead study as a table: ns per call, ratios to raw (median [p25-p75])."""
    rows = []
    for case in results:
        if case.skipped:
            rows.append([case.driver, case.idle, case.ready, "skipped: " + case.skipped])
            continue
        ns = case.ns_per_call
        ratio = case.ratio_to_raw
        verdict = {None: "-", True: "ok", False: "MISS"}[case.passed]
        rows.append(
            [
                case.driver,
                case.idle,
                case.ready,
                *(f"{ns[c].median:.0f}" if c in ns else "-" for c in CONTENDERS),
                _ratio_cell(ratio.get("pollkit")),
                _ratio_cell(ratio.get("wrapper")),
                _ratio_cell(ratio.get("selectors")),
                "-" if case.target is None else f"<= {case.target:.2f}",
                verdict,
            ]
        )
    headers = [
        "driver",
        "idle",
        "ready",
        *(f"{c} ns" for c in CONTENDERS),
        "pollkit/raw",
        "wrapper/raw",
        "selectors/raw",
        "target",
        "",
    ]
    width = len(headers)
    return format_table(headers, [row + [""] * (width - len(row)) for row in rows])


def scaling_table(results: Sequence[CaseResult]) -> str:
    """The scaling study as a table: ns per call by driver, N and contender."""
    rows = []
    for case in results:
        if case.skipped:
            rows.append([case.driver, case.idle, "-", "-", "-", "-", case.skipped])
            continue
        ns = case.ns_per_call
        rows.append(
            [
                case.driver,
                case.idle,
                *(
                    f"{ns[c].median:.0f}" if c in ns else "-"
                    for c in ("raw", "pollkit", "selectors")
                ),
                _ratio_cell(case.ratio_to_raw.get("pollkit")),
                "",
            ]
        )
    return format_table(
        ["driver", "idle fds", "raw ns", "pollkit ns", "selectors ns", "pollkit/raw", ""], rows
    )
