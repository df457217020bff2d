"""Where pollkit's ``poll(0)`` overhead goes: the driver's hot path rebuilt step by step.

:mod:`pollkit.bench.overhead` says *how much* pollkit adds to the raw call;
this says *what for*.  For each driver it times, in the same alternating
rounds, the raw call, then wrappers that add one piece of pollkit's hot path
at a time, then the real driver:

* epoll: a bare method calling a stored bound method, and one calling the
  epoll object's method (what the driver does); plus the argument checks
  of ``poll(0)`` and ``poll(None)`` (``max_events is None``, then ``not
  timeout``); plus the waker-token test after the call (``if
  self._wake_tokens``); both (what the driver does);
* poll: a bare method converting seconds to milliseconds; plus the scan of
  the results for ``POLLNVAL`` (closed fds must be reported once and
  dropped);
* select: unpacking only (the raw lists, not pollkit's result); a bare
  method building ``(fd, READ)`` pairs with ``zip`` (a new tuple per event);
  the same pairs taken from a table built once (what the driver does).

The replicas copy the drivers' code; if a driver's hot path changes, the
``pollkit`` line moves and the replicas no longer explain it.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from .._epoll import EpollPoller
from .._poll import PollPoller
from .._select import SelectPoller
from .overhead import (
    _SELECT_LOOP,
    CaseResult,
    FdSet,
    _alternate,
    _calibrate,
    _compile_loop,
    _Contender,
    method_loop,
)
from .report import Progress, format_table

__all__ = ["BREAKDOWN_CASES", "breakdown_table", "run_breakdown"]

_READ = 1
_INVALID = 0x20  # POLLNVAL
_READ_PAIRS = [(fd, _READ) for fd in range(1024)]
_read_pair = _READ_PAIRS.__getitem__

#: (driver, idle fds, ready fds): where the overhead study's targets are tightest.
BREAKDOWN_CASES = (("epoll", 1000, 1), ("poll", 1000, 64), ("select", 500, 64))

Call = Callable[[float], Any]


class _Replica:
    """Holds the kernel object or call and the state a driver's hot path tests.

    epoll steps call ``self._kernel.poll(...)``, a method call on the epoll
    object, as the driver does; ``bound`` calls a stored bound method instead,
    which CPython 3.11 makes measurably dearer.
    """

    def __init__(
        self,
        kernel_poll: Callable[..., Any],
        readers: list[int] | None = None,
        kernel: Any = None,
    ) -> None:
        self._kernel_poll = kernel_poll
        self._kernel = kernel
        self._wake_tokens: list[None] = []
        self._armed_oneshots: set[int] = set()
        self._readers = readers or []
        self._writers: list[int] = []
        self._urgent: list[int] = []

    def _slow(self, timeout: float | None, max_events: int | None) -> Any:
        raise AssertionError("the benchmark never takes the slow path")

    # -- epoll -------------------------------------------------------------------

    def bound(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        return self._kernel_poll(timeout)

    def bare(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        return self._kernel.poll(timeout)

    def arg_checks(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        if max_events is None and not timeout:
            return self._kernel.poll(timeout)
        return self._slow(timeout, max_events)

    def waker_test(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        ready = self._kernel.poll(timeout)
        if self._wake_tokens:
            return self._slow(timeout, max_events)
        return ready

    def both(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        if max_events is None and not timeout:
            ready = self._kernel.poll(timeout)
            if self._wake_tokens:
                return self._slow(timeout, max_events)
            return ready
        return self._slow(timeout, max_events)

    # -- poll --------------------------------------------------------------------

    def bare_ms(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        return self._kernel_poll(None if timeout is None else timeout * 1000.0)

    def nval_scan(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        ready = self._kernel_poll(None if timeout is None else timeout * 1000.0)
        for _, mask in ready:
            if mask == _INVALID:
                return self._slow(timeout, max_events)
        return ready

    # -- select ------------------------------------------------------------------

    def unpack(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        readable, _, _ = self._kernel_poll(self._readers, self._writers, self._urgent, timeout)
        return readable

    def zip_pairs(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        readable, _, _ = self._kernel_poll(self._readers, self._writers, self._urgent, timeout)
        return list(zip(readable, repeat(_READ)))

    def table_pairs(self, timeout: float | None = None, max_events: int | None = None) -> Any:
        readable, _, _ = self._kernel_poll(self._readers, self._writers, self._urgent, timeout)
        return list(map(_read_pair, readable))


_STEPS: dict[str, tuple[str, ...]] = {
    "epoll": ("bound", "bare", "arg_checks", "waker_test", "both"),
    "poll": ("bare_ms", "nval_scan"),
    "select": ("unpack", "zip_pairs", "table_pairs"),
}


def _timers(driver: str, fds: list[int]) -> tuple[dict[str, Callable[[int], int]], list[Any]]:
    """Timing loops for raw, each replica step and pollkit; plus what to close."""
    timers: dict[str, Callable[[int], int]] = {}
    closers: list[Any] = []
    if driver == "epoll":
        epoll = select.epoll()
        closers.append(epoll)
        for fd in fds:
            epoll.register(fd, select.EPOLLIN)
        timers["raw"] = method_loop("raw", epoll, "poll")
        replica = _Replica(epoll.poll, kernel=epoll)
        poller: Any = EpollPoller()
    elif driver == "poll":
        kernel = select.poll()
        for fd in fds:
            kernel.register(fd, select.POLLIN)
        timers["raw"] = method_loop("raw", kernel, "poll")
        replica = _Replica(kernel.poll)
        poller = PollPoller()
    elif driver == "select":
        readers = list(fds)
        timers["raw"] = _compile_loop(
            _SELECT_LOOP, "raw", call=select.select, r=readers, w=[], x=[]
        )
        replica = _Replica(select.select, list(fds))
        poller = SelectPoller()
    else:
        raise ValueError(f"unknown driver {driver!r}; choose from epoll, poll, select")
    closers.append(poller)
    for step in _STEPS[driver]:
        timers[step] = method_loop(step, replica, step)
    for fd in fds:
        poller.register(fd, _READ)
    timers["pollkit"] = method_loop("pollkit", poller, "poll")
    return timers, closers


def run_breakdown(
    cases: Sequence[tuple[str, int, int]] = BREAKDOWN_CASES,
    *,
    rounds: int = 300,
    round_seconds: float = 0.002,
    progress: Progress | None = None,
) -> list[CaseResult]:
    """Time each case's raw call, replica steps and pollkit in alternating rounds."""
    if progress is not None:
        progress.start("breakdown", len(cases) * rounds)
    results = []
    for driver, idle, ready in cases:
        with FdSet(idle, ready) as fdset:
            timers, closers = _timers(driver, fdset.fds)
            try:
                built = {name: _Contender(timed, lambda: 0) for name, timed in timers.items()}
                calls = _calibrate(timers["raw"], round_seconds)
                samples = _alternate(built, calls, rounds, progress, f"{driver} {ready} ready")
            finally:
                for closer in closers:
                    closer.close()
        result = CaseResult(driver, idle, ready)
        result.summarize(calls, samples)
        results.append(result)
    return results


_EXPLAIN = {
    "raw": "the select module's own call",
    "bound": "a method calling a stored bound method",
    "bare": "a method calling the epoll object's poll()",
    "arg_checks": "bare + max_events/timeout checks",
    "waker_test": "bare + `if self._wake_tokens` after the call",
    "both": "checks + waker test: the driver's code",
    "bare_ms": "a method converting seconds to ms",
    "nval_scan": "bare + the POLLNVAL scan of every event",
    "unpack": "unpacking the three lists (not the contract)",
    "zip_pairs": "(fd, READ) pairs built by zip: a tuple per event",
    "table_pairs": "(fd, READ) pairs from a table: the driver's code",
    "pollkit": "the real driver",
}


def breakdown_table(results: Sequence[CaseResult]) -> str:
    rows: list[list[object]] = []
    for result in results:
        raw = result.ns_per_call["raw"].median
        for name, spread in result.ns_per_call.items():
            ratio = result.ratio_to_raw.get(name)
            rows.append(
                [
                    f"{result.driver} {result.ready} ready",
                    name,
                    f"{spread.median:.0f}",
                    f"{spread.median - raw:+.0f}",
                    "1"
                    if ratio is None
                    else f"{ratio.median:.3f} [{ratio.p25:.3f}-{ratio.p75:.3f}]",
                    _EXPLAIN.get(name, ""),
                ]
            )
    return format_table(["case", "step", "ns/call", "vs raw", "ratio [p25-p75]", "what"], rows)
