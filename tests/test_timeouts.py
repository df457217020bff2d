"""Contract 4: timeouts.

``None`` blocks until an event or ``wakeup()``; ``0`` never blocks; a
positive timeout waits *at least* that long (rounded up to the driver's
resolution, never into a busy loop); a signal neither shortens nor restarts
the wait, and an exception raised by a signal handler propagates.

Only lower bounds on waits are asserted exactly; upper bounds are
``PROMPT``-generous, to tell "returned" from "blocked forever".
"""

from __future__ import annotations

import math
import threading
import time
from types import FrameType

import pytest

from conftest import CLOCK_EPSILON, PROMPT, READ, SocketPair, signal_shower
from pollkit import Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


def _timed_poll(poller: Poller, timeout: float | None) -> tuple[list[tuple[int, int]], float]:
    started = time.monotonic()
    ready = poller.poll(timeout)
    return ready, time.monotonic() - started


@pytest.mark.timeout(10)
def test_none_blocks_until_an_event(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ)
    sender = threading.Timer(0.05, right.send, args=(b"x",))
    sender.start()
    try:
        ready = poller.poll(None)
    finally:
        sender.join(PROMPT)
    assert ready == [(left.fileno(), READ)]


@pytest.mark.timeout(10)
def test_none_blocks_until_wakeup(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    woken = threading.Event()

    def wake() -> None:
        woken.set()
        poller.wakeup()

    waker = threading.Timer(0.05, wake)
    waker.start()
    try:
        ready = poller.poll(None)
    finally:
        waker.join(PROMPT)
    assert ready == []
    assert woken.is_set(), "poll(None) returned before wakeup() was called"


def test_zero_never_blocks(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    started = time.monotonic()
    for _ in range(100):
        assert poller.poll(0) == []
        assert poller.poll(0.0) == []
    assert time.monotonic() - started < PROMPT


@pytest.mark.parametrize("timeout", [0.001, 0.02, 0.1])
def test_positive_timeout_waits_at_least_that_long(
    poller: Poller, socketpair: SocketPair, timeout: float
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    ready, elapsed = _timed_poll(poller, timeout)
    assert ready == []
    assert elapsed >= timeout - CLOCK_EPSILON
    assert elapsed < timeout + PROMPT


def test_positive_timeout_with_nothing_registered(poller: Poller) -> None:
    ready, elapsed = _timed_poll(poller, 0.02)
    assert ready == []
    assert elapsed >= 0.02 - CLOCK_EPSILON


def test_integer_timeout_is_seconds(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"x")
    # An event ends a long wait at once, whatever the number's type.
    ready, elapsed = _timed_poll(poller, 30)
    assert ready == [(left.fileno(), READ)]
    assert elapsed < PROMPT


def test_timeout_longer_than_the_kernel_takes_is_accepted(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"x")
    # epoll_wait() and poll() take an int of milliseconds: 1e10 s overflows it.
    assert poller.poll(1e10) == [(left.fileno(), READ)]
    assert poller.poll(float("inf")) == [(left.fileno(), READ)]


@pytest.mark.parametrize("timeout", [1e-4, 1e-6, 1e-9])
def test_sub_millisecond_timeout_waits_at_least_that_long(poller: Poller, timeout: float) -> None:
    for _ in range(5):
        ready, elapsed = _timed_poll(poller, timeout)
        assert ready == []
        assert elapsed >= timeout - CLOCK_EPSILON


@pytest.mark.parametrize("timeout", [1e-4, 1e-6])
def test_sub_millisecond_timeout_does_not_spin(poller: Poller, timeout: float) -> None:
    # Every call waits at least ``timeout``, so a window can hold at most
    # window / timeout calls (plus the one running when it closes).  A driver
    # that turned the timeout into 0 would make tens of thousands.
    window = 0.05
    limit = math.ceil(window / timeout) + 1
    calls = 0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline and calls <= limit:
        assert poller.poll(timeout) == []
        calls += 1
    assert calls <= limit, f"{calls} calls of poll({timeout}) in {window} s: a busy loop"


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


@pytest.mark.timeout(20)
def test_signal_does_not_shorten_a_timeout(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    timeout = 0.15
    handled: list[int] = []

    def count(signum: int, frame: FrameType | None) -> None:
        handled.append(signum)

    # Signals every 10 ms from 20 ms on, outlasting the wait: a driver that
    # restarted the full timeout after each one would not return for long.
    with signal_shower(count, count=25):
        ready, elapsed = _timed_poll(poller, timeout)
    assert ready == []
    assert handled, "no signal arrived during the wait; the test proved nothing"
    assert elapsed >= timeout - CLOCK_EPSILON
    assert elapsed < timeout + PROMPT, "the wait was restarted by signals"


@pytest.mark.timeout(20)
def test_signal_does_not_end_a_blocking_poll(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    woken = threading.Event()

    def wake() -> None:
        woken.set()
        poller.wakeup()

    with signal_shower(_ignore, count=5, then=wake) as shower:
        ready = poller.poll(None)
    assert ready == []
    assert woken.is_set(), "poll(None) returned because of a signal, not wakeup()"
    assert shower.sent == 5


class HandlerRaised(Exception):
    pass


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "exception",
    [HandlerRaised, KeyboardInterrupt, TimeoutError],
    ids=["custom", "KeyboardInterrupt", "TimeoutError-an-OSError"],
)
def test_exception_from_signal_handler_propagates(
    poller: Poller, socketpair: SocketPair, exception: type[BaseException]
) -> None:
    left, _ = socketpair
    poller.register(left, READ)

    def explode(signum: int, frame: FrameType | None) -> None:
        raise exception("from the handler")

    started = time.monotonic()
    with pytest.raises(exception, match="from the handler"), signal_shower(explode, count=1):
        poller.poll(10.0)
    assert time.monotonic() - started < PROMPT
    # The poller is still usable afterwards.
    assert poller.poll(0) == []


@pytest.mark.timeout(20)
def test_exception_from_signal_handler_propagates_from_poll_none(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    poller.register(left, READ)

    def explode(signum: int, frame: FrameType | None) -> None:
        raise HandlerRaised("from the handler")

    with pytest.raises(HandlerRaised), signal_shower(explode, count=1):
        poller.poll(None)
