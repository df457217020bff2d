"""Contract 7: oneshot on every driver.

After one report the fd stays registered but disarmed until ``modify()``
re-arms it.  Native on epoll, emulated on poll and select.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair, masks_by_fd
from pollkit import Poller, Registration

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


def test_every_driver_has_oneshot(poller: Poller) -> None:
    assert "oneshot" in poller.features


def test_oneshot_reports_once_then_stays_registered(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    # Still readable, but disarmed.
    assert poller.poll(0) == []
    assert poller.poll(0.02) == []
    assert left in poller
    assert len(poller) == 1
    assert poller.get_registration(left) == Registration(READ, oneshot=True)


def test_modify_rearms(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert poller.poll(0) == []
    poller.modify(left, READ, oneshot=True)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert poller.poll(0) == []
    # Re-armed without oneshot: level-triggered again.
    poller.modify(left, READ | WRITE)
    for _ in range(3):
        assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ | WRITE}


def test_modify_before_the_report_keeps_it_armed(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    poller.modify(left, WRITE, oneshot=True)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE}
    assert poller.poll(0) == []


def test_disarmed_fd_reports_nothing_not_even_hangup(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    right.close()
    assert poller.poll(0.02) == []
    poller.modify(left, READ, oneshot=True)
    assert masks_by_fd(poller.poll(1.0))[left.fileno()] & READ


def test_oneshot_fd_not_yet_ready_waits_for_readiness(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    assert poller.poll(0) == []
    assert poller.poll(0) == []  # an empty poll does not disarm it
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


def test_disarmed_fd_can_be_unregistered_and_registered_again(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    right.send(b"x")
    assert poller.poll(1.0)
    poller.unregister(left)
    assert left not in poller
    poller.register(left, READ)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


def test_oneshot_among_level_triggered_fds(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    once, once_peer = make_socketpair()
    level, level_peer = make_socketpair()
    poller.register(once, READ, oneshot=True)
    poller.register(level, READ)
    once_peer.send(b"x")
    level_peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {once.fileno(): READ, level.fileno(): READ}
    assert masks_by_fd(poller.poll(1.0)) == {level.fileno(): READ}


def test_oneshot_with_max_events_disarms_only_what_was_returned(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    pairs = [make_socketpair() for _ in range(4)]
    for sock, peer in pairs:
        poller.register(sock, READ, oneshot=True)
        peer.send(b"x")
    seen: list[int] = []
    for _ in range(8):
        seen.extend(fd for fd, _ in poller.poll(0, max_events=1))
    assert sorted(seen) == sorted(sock.fileno() for sock, _ in pairs)
