"""Contract 5: an fd closed while still registered.

``poll()`` never raises, spins or hides other fds' events because of it.
poll and select report it once with ``INVALID`` and drop it; epoll forgets it
silently.  A later ``unregister()`` succeeds quietly on every driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from conftest import CLOCK_EPSILON, INVALID, READ, WRITE, SocketPair, driver_of, masks_by_fd
from pollkit import NotRegisteredError, Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
# These tests close registered fds or pollers with fds registered on purpose:
# that is the behaviour under test, and exactly what debug: warns about.
pytestmark = [pytest.mark.pollkit_exact, pytest.mark.pollkit_misuse]

#: Drivers whose kernel call tells of a closed fd (``POLLNVAL``, ``EBADF``).
REPORTS_INVALID = {"poll", "select"}


def _close_registered(
    poller: Poller, make_socketpair: Callable[[], SocketPair], events: int = READ
) -> tuple[int, SocketPair]:
    """Register one end of a new pair, then close it.

    Make every other socket of a test first: the next socket would reuse the
    closed number.
    """
    pair = make_socketpair()
    poller.register(pair[0], events)
    fd = pair[0].fileno()
    pair[0].close()
    return fd, pair


@pytest.mark.parametrize("timeout", [0, 1.0, None])
def test_closed_fd_does_not_hide_other_events(
    poller: Poller, make_socketpair: Callable[[], SocketPair], timeout: float | None
) -> None:
    live, peer = make_socketpair()
    poller.register(live, READ)
    closed_fd, _ = _close_registered(poller, make_socketpair)
    peer.send(b"x")
    ready = masks_by_fd(poller.poll(timeout))
    assert ready[live.fileno()] == READ
    if driver_of(poller) in REPORTS_INVALID:
        assert ready[closed_fd] & INVALID
        assert set(ready) == {live.fileno(), closed_fd}
    else:
        assert set(ready) == {live.fileno()}
    # Next time only the live fd: a closed fd is reported at most once.
    assert masks_by_fd(poller.poll(timeout)) == {live.fileno(): READ}


def test_closed_fd_is_reported_once_with_invalid_and_dropped(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    closed_fd, _ = _close_registered(poller, make_socketpair, READ | WRITE)
    first = poller.poll(0)
    if driver_of(poller) in REPORTS_INVALID:
        assert len(first) == 1
        fd, mask = first[0]
        assert fd == closed_fd
        assert mask & INVALID
        assert closed_fd not in poller
        assert len(poller) == 0
    else:
        assert first == []  # epoll forgets it silently
    for _ in range(3):
        assert poller.poll(0) == []


def test_closed_fd_does_not_make_poll_spin(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    _close_registered(poller, make_socketpair)
    poller.poll(0)  # poll/select report it here, once
    timeout = 0.05
    for _ in range(3):
        started = time.monotonic()
        assert poller.poll(timeout) == []
        elapsed = time.monotonic() - started
        assert elapsed >= timeout - CLOCK_EPSILON, "poll() returned early: a busy loop"


def test_closed_fd_does_not_make_a_blocking_poll_spin_or_raise(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    closed_fd, _ = _close_registered(poller, make_socketpair)
    poller.wakeup()
    ready = masks_by_fd(poller.poll(None))
    if driver_of(poller) in REPORTS_INVALID:
        assert set(ready) == {closed_fd}
    else:
        assert ready == {}


def test_unregister_after_close_is_quiet_before_any_poll(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    closed_fd, _ = _close_registered(poller, make_socketpair)
    poller.unregister(closed_fd)
    assert closed_fd not in poller
    assert len(poller) == 0
    assert poller.poll(0) == []
    with pytest.raises(NotRegisteredError):
        poller.unregister(closed_fd)


def test_unregister_after_close_is_quiet_after_a_poll(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    closed_fd, _ = _close_registered(poller, make_socketpair)
    poller.poll(0)  # poll/select drop it here
    poller.unregister(closed_fd)
    assert closed_fd not in poller
    assert len(poller) == 0
    with pytest.raises(NotRegisteredError):
        poller.unregister(closed_fd)


def test_the_number_can_be_registered_again_once_unregistered(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    closed_fd, _ = _close_registered(poller, make_socketpair)
    poller.poll(0)
    poller.unregister(closed_fd)
    reused, peer = make_socketpair()  # the lowest free number: the closed one
    assert reused.fileno() == closed_fd
    poller.register(reused, READ)
    peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {closed_fd: READ}


def test_many_closed_fds_with_max_events(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    live, peer = make_socketpair()
    poller.register(live, READ)
    doomed = [make_socketpair()[0] for _ in range(5)]
    for sock in doomed:
        poller.register(sock, READ)
    closed = {sock.fileno() for sock in doomed}
    for sock in doomed:
        sock.close()
    peer.send(b"x")
    seen_live = False
    reported: set[int] = set()
    for _ in range(10):
        ready = masks_by_fd(poller.poll(0, max_events=2))
        assert len(ready) <= 2
        for fd, mask in ready.items():
            if fd == live.fileno():
                assert mask == READ
                seen_live = True
            else:
                assert fd in closed
                assert mask & INVALID
                assert fd not in reported, f"closed fd {fd} reported twice"
                reported.add(fd)
    assert seen_live
    if driver_of(poller) in REPORTS_INVALID:
        assert reported == closed
    for fd in closed:
        poller.unregister(fd)
    assert len(poller) == 1


def test_oneshot_events_are_not_lost_beside_a_closed_fd(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    """Regression: select's EBADF recovery disarmed every ready oneshot fd,
    then cut the result to ``max_events``, so the oneshots it left out were
    never reported; and it dropped closed fds it never reported."""
    live = [make_socketpair() for _ in range(4)]
    for sock, peer in live:
        poller.register(sock, READ, oneshot=True)
        peer.send(b"x")
    closed_fd, _ = _close_registered(poller, make_socketpair)
    seen: dict[int, int] = {}
    for _ in range(10):
        for fd, mask in poller.poll(0, max_events=1):
            assert fd not in seen, f"fd {fd} reported twice"
            seen[fd] = mask
    assert {sock.fileno() for sock, _ in live} <= set(seen)
    assert all(seen[sock.fileno()] == READ for sock, _ in live)
    if driver_of(poller) in REPORTS_INVALID:
        assert seen[closed_fd] & INVALID
