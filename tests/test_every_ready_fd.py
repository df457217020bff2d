"""One poll() returns every ready fd, on every driver (DESIGN.md, "One poll()
returns every ready fd").

The raw ``select.epoll.poll()`` stops at ``FD_SETSIZE - 1`` = 1023 events
unless told otherwise; a driver must not pass that cap on.  select can only
watch fds below ``FD_SETSIZE``, so there the test registers as many as fit.
"""

from __future__ import annotations

import resource
import selectors
import socket
from collections.abc import Callable, Iterator

import pytest

from pollkit import FD_SETSIZE, Events, Poller
from pollkit.compat import PollerSelector

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact

#: Ready fds to register: well past epoll's default cap of 1023 events.
WANTED = 3000


def _budget(poller_backend: str) -> int:
    """How many ready fds this driver can be given (pairs use two fds each)."""
    if poller_backend.endswith("select"):
        return FD_SETSIZE - 64  # below FD_SETSIZE, with room for the test's own fds
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * WANTED + 100:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for {WANTED} ready fds")
    return WANTED


@pytest.fixture
def writable_fds(poller_backend: str) -> Iterator[list[socket.socket]]:
    """Non-blocking socket ends that are all writable, below FD_SETSIZE on select."""
    wanted = _budget(poller_backend)
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < wanted:
            left, right = socket.socketpair()
            sockets.extend((left, right))
            for sock in (left, right):
                sock.setblocking(False)
        if poller_backend.endswith("select"):
            kept = [sock for sock in sockets if sock.fileno() < FD_SETSIZE]
            for sock in sockets:
                if sock.fileno() >= FD_SETSIZE:
                    sock.close()
            sockets = kept
        yield sockets[:wanted]
    finally:
        for sock in sockets:
            sock.close()


def _expected_count(poller_backend: str, fds: list[socket.socket]) -> int:
    # select gets what fits below FD_SETSIZE; every other driver gets WANTED.
    return len(fds) if poller_backend.endswith("select") else WANTED


@pytest.mark.timeout(60)
def test_one_poll_returns_every_ready_fd(
    poller: Poller, poller_backend: str, writable_fds: list[socket.socket]
) -> None:
    for sock in writable_fds:
        poller.register(sock, Events.WRITE)
    expected = {sock.fileno() for sock in writable_fds}
    assert len(expected) == _expected_count(poller_backend, writable_fds)
    for timeout in (0, 0.5, None):
        ready = poller.poll(timeout)
        assert len(ready) == len(expected), f"timeout={timeout!r}"
        assert {fd for fd, _ in ready} == expected
        assert all(mask == Events.WRITE for _, mask in ready)


@pytest.mark.timeout(60)
def test_max_events_still_bounds_the_result(
    poller: Poller, poller_backend: str, writable_fds: list[socket.socket]
) -> None:
    for sock in writable_fds:
        poller.register(sock, Events.WRITE)
    expected = {sock.fileno() for sock in writable_fds}
    seen: set[int] = set()
    # No fd starved: bounded calls of 7 cover every ready fd.
    for _ in range(len(expected) // 7 + 2):
        ready = poller.poll(0, max_events=7)
        assert len(ready) == 7
        seen.update(fd for fd, _ in ready)
    assert seen == expected


@pytest.mark.timeout(60)
def test_the_selectors_adapter_returns_every_ready_key(
    poller_backend: str, writable_fds: list[socket.socket]
) -> None:
    with PollerSelector(poller_backend) as selector:
        for sock in writable_fds:
            selector.register(sock, selectors.EVENT_WRITE, data=sock.fileno())
        for timeout in (0, 0.5, None):
            ready = selector.select(timeout)
            assert {key.data for key, _ in ready} == {sock.fileno() for sock in writable_fds}
            assert all(events == selectors.EVENT_WRITE for _, events in ready)


#: Which stdlib selector each driver stands in for, by what it wraps.
_STDLIB_SELECTORS: dict[str, Callable[[], selectors.BaseSelector]] = {
    "epoll": selectors.EpollSelector,
    "poll": selectors.PollSelector,
    "select": selectors.SelectSelector,
}


@pytest.mark.timeout(10)
def test_the_adapter_has_fileno_exactly_where_the_stdlib_selector_does(
    poller_backend: str,
) -> None:
    driver = poller_backend.rsplit(":", 1)[-1]
    with _STDLIB_SELECTORS[driver]() as stdlib, PollerSelector(poller_backend) as ours:
        assert hasattr(ours, "fileno") == hasattr(stdlib, "fileno")
        assert isinstance(ours, PollerSelector)
        if hasattr(ours, "fileno"):
            assert ours.fileno() == ours.poller.fileno()
