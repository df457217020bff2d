"""Contract 10: ``max_events`` bounds one call's result; no fd is starved."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair, masks_by_fd
from pollkit import Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


@pytest.mark.parametrize("max_events", [1, 3, 4])
def test_every_ready_fd_is_seen_within_a_bounded_number_of_calls(
    poller: Poller, make_socketpair: Callable[[], SocketPair], max_events: int
) -> None:
    count = 10
    socks = []
    for _ in range(count):
        sock, peer = make_socketpair()
        poller.register(sock, READ)
        peer.send(b"x")
        socks.append(sock)
    expected = {sock.fileno() for sock in socks}
    # Level-triggered: every fd stays ready, so an unfair driver would serve
    # the same few fds on every call.
    calls = math.ceil(count / max_events) + 1
    seen: set[int] = set()
    for _ in range(calls):
        ready = masks_by_fd(poller.poll(1.0, max_events=max_events))
        assert 1 <= len(ready) <= max_events
        assert set(ready.values()) == {READ}
        seen |= set(ready)
    assert seen == expected, f"starved: {sorted(expected - seen)}"


def test_every_fd_is_served_evenly_over_many_calls(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    socks = []
    for _ in range(7):
        sock, _ = make_socketpair()
        poller.register(sock, WRITE)
        socks.append(sock)
    served = dict.fromkeys((sock.fileno() for sock in socks), 0)
    rounds = 20
    for _ in range(rounds * len(socks) // 2):
        for fd in masks_by_fd(poller.poll(1.0, max_events=2)):
            served[fd] += 1
    # Round-robin would give each fd exactly ``rounds``; allow slack, but no fd
    # may fall far behind.
    assert min(served.values()) >= rounds // 2, served


def test_max_events_larger_than_ready_returns_all(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    socks = []
    for _ in range(3):
        sock, peer = make_socketpair()
        poller.register(sock, READ)
        peer.send(b"x")
        socks.append(sock)
    ready = masks_by_fd(poller.poll(1.0, max_events=100))
    assert ready == {sock.fileno(): READ for sock in socks}


def test_max_events_with_a_fd_joining_later(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    first = [make_socketpair() for _ in range(4)]
    for sock, peer in first:
        poller.register(sock, READ)
        peer.send(b"x")
    for _ in range(3):
        assert len(poller.poll(1.0, max_events=2)) == 2
    late, late_peer = make_socketpair()
    poller.register(late, READ)
    late_peer.send(b"x")
    seen: set[int] = set()
    for _ in range(4):
        seen |= set(masks_by_fd(poller.poll(1.0, max_events=2)))
    assert late.fileno() in seen
