"""Contract 6: select's ``FD_SETSIZE`` limit, refused at ``register()``.

epoll and poll have no such limit and must watch high fds like any other.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair, driver_of, masks_by_fd
from pollkit import FD_SETSIZE, FdOutOfRangeError, Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


def test_fd_setsize_is_linux_value() -> None:
    assert FD_SETSIZE == 1024


@pytest.fixture(autouse=True)
def _need_high_fds() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= FD_SETSIZE + 10:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: cannot open fds at or above FD_SETSIZE")


@pytest.mark.parametrize("minimum", [FD_SETSIZE, FD_SETSIZE + 1000])
def test_high_fd_is_refused_by_select_and_watched_by_the_others(
    poller: Poller, make_high_socketpair: Callable[[int], SocketPair], minimum: int
) -> None:
    high, peer = make_high_socketpair(minimum)
    assert high.fileno() >= minimum
    if driver_of(poller) == "select":
        with pytest.raises(FdOutOfRangeError) as caught:
            poller.register(high, READ)
        message = str(caught.value)
        assert str(high.fileno()) in message
        assert "epoll" in message or "poll driver" in message, message
        assert isinstance(caught.value, ValueError)
        assert high not in poller
        assert len(poller) == 0
        assert poller.poll(0) == []
        return
    poller.register(high, READ)
    peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {high.fileno(): READ}
    poller.modify(high, WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {high.fileno(): WRITE}
    poller.unregister(high)
    assert len(poller) == 0


def test_select_refusal_leaves_low_fds_working(
    poller: Poller,
    make_high_socketpair: Callable[[int], SocketPair],
    socketpair: SocketPair,
) -> None:
    low, low_peer = socketpair
    high, _ = make_high_socketpair(FD_SETSIZE)
    poller.register(low, READ)
    if driver_of(poller) == "select":
        with pytest.raises(FdOutOfRangeError):
            poller.register(high, READ)
    else:
        poller.register(high, READ)
    low_peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {low.fileno(): READ}


def test_largest_select_fd_is_accepted(
    poller: Poller, make_high_socketpair: Callable[[int], SocketPair]
) -> None:
    edge, peer = make_high_socketpair(FD_SETSIZE - 1)
    if edge.fileno() != FD_SETSIZE - 1:
        pytest.skip(f"fd {FD_SETSIZE - 1} is in use")
    poller.register(edge, READ)
    peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {edge.fileno(): READ}
