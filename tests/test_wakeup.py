"""Contract 9: ``wakeup()``.

Thread-safe and safe from a signal handler; it makes a blocked ``poll()``
(or the next one) return; many calls before a ``poll()`` coalesce into one
return; the waker's own fd never shows in results or in ``len()``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import FrameType

import pytest

from conftest import PROMPT, READ, SocketPair, masks_by_fd, open_fds, signal_shower
from pollkit import Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


@pytest.mark.timeout(10)
def test_wakeup_from_another_thread_unblocks_poll_none(poller: Poller) -> None:
    woken = threading.Event()

    def wake() -> None:
        woken.set()
        poller.wakeup()

    waker = threading.Timer(0.05, wake)
    waker.start()
    try:
        assert poller.poll(None) == []
    finally:
        waker.join(PROMPT)
    assert woken.is_set()


@pytest.mark.timeout(10)
def test_wakeup_before_poll_makes_the_next_poll_return(poller: Poller) -> None:
    poller.wakeup()
    started = time.monotonic()
    assert poller.poll(None) == []
    assert time.monotonic() - started < PROMPT


@pytest.mark.timeout(10)
def test_wakeup_ends_a_long_timeout(poller: Poller) -> None:
    waker = threading.Timer(0.05, poller.wakeup)
    waker.start()
    started = time.monotonic()
    try:
        assert poller.poll(60.0) == []
    finally:
        waker.join(PROMPT)
    assert time.monotonic() - started < PROMPT


@pytest.mark.timeout(10)
def test_wakeup_from_a_signal_handler(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    handled: list[int] = []

    def wake(signum: int, frame: FrameType | None) -> None:
        handled.append(signum)
        poller.wakeup()

    with signal_shower(wake, count=1, first_after=0.05):
        assert poller.poll(None) == []
    assert handled


@pytest.mark.timeout(10)
@pytest.mark.parametrize("calls", [2, 100])
def test_many_wakeups_coalesce_into_one_return(
    poller: Poller, socketpair: SocketPair, calls: int
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    for _ in range(calls):
        poller.wakeup()
    started = time.monotonic()
    assert poller.poll(None) == []
    assert time.monotonic() - started < PROMPT
    # The wakeups were used up by that one return.
    assert poller.poll(0) == []
    assert poller.poll(0.02) == []
    assert len(poller) == 1


@pytest.mark.timeout(10)
def test_wakeup_with_max_events_is_used_up_too(poller: Poller) -> None:
    for _ in range(10):
        poller.wakeup()
    assert poller.poll(PROMPT, max_events=1) == []
    assert poller.poll(0, max_events=1) == []
    assert poller.poll(0) == []


@pytest.mark.timeout(10)
def test_wakeup_does_not_hide_real_events(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"x")
    poller.wakeup()
    ready = poller.poll(1.0)
    # The same call may or may not return the event, but the event is never lost.
    if not ready:
        ready = poller.poll(1.0)
    assert ready == [(left.fileno(), READ)]


def test_waker_fd_is_never_in_results_or_len(poller_factory: Callable[[], Poller]) -> None:
    before = open_fds()
    poller: Poller = poller_factory()
    own_fds = open_fds() - before
    assert own_fds, "the poller has no fd of its own: where is the waker?"
    assert len(poller) == 0
    for _ in range(3):
        poller.wakeup()
        ready = poller.poll(1.0)
        assert ready == []
        assert not own_fds & set(masks_by_fd(ready))
        assert len(poller) == 0
    for fd in own_fds:
        assert fd not in poller


@pytest.mark.timeout(20)
def test_wakeup_from_many_threads_at_once(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    start = threading.Barrier(4)

    def hammer() -> None:
        start.wait(PROMPT)
        for _ in range(200):
            poller.wakeup()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    returns = 0
    try:
        while any(thread.is_alive() for thread in threads) and returns < 10_000:
            assert poller.poll(0.01) == []
            returns += 1
    finally:
        for thread in threads:
            thread.join(PROMPT)
    # Whatever the interleaving, at most one early return is left pending,
    # and no call ever reported the waker's fd.
    assert poller.poll(0.01) == []
    assert poller.poll(0) == []
    assert len(poller) == 1


@pytest.mark.timeout(20)
def test_wakeup_is_never_lost_across_threads(poller: Poller) -> None:
    # Each round: a thread calls wakeup() once, and the blocked poll must return.
    for _ in range(50):
        waker = threading.Thread(target=poller.wakeup)
        waker.start()
        try:
            started = time.monotonic()
            assert poller.poll(PROMPT) == []
            assert time.monotonic() - started < PROMPT, "a wakeup was lost"
        finally:
            waker.join(PROMPT)


@pytest.mark.timeout(10)
def test_pipe_waker_where_there_is_no_eventfd(
    poller_factory: Callable[[], Poller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build without os.eventfd gets a pipe waker.  Check that path here
    # too: the same coalescing, the same invisible, private fds.
    monkeypatch.delattr(os, "eventfd", raising=False)
    before = open_fds()
    poller = poller_factory()
    own = open_fds() - before
    for fd in own:
        assert not os.get_inheritable(fd)
    for _ in range(50):
        poller.wakeup()
    assert poller.poll(None) == []
    assert poller.poll(0) == []
    waker = threading.Timer(0.05, poller.wakeup)
    waker.start()
    try:
        assert poller.poll(None) == []
    finally:
        waker.join(PROMPT)
    assert len(poller) == 0
    poller.close()
    assert open_fds() - before == set()
