"""Contract 11: ``close()`` and the poller's own fds; the context manager."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair, masks_by_fd, open_fds
from pollkit import Poller, PollerClosedError, UnsupportedFeatureError

# These tests close registered fds or pollers with fds registered on purpose:
# that is the behaviour under test, and exactly what debug: warns about.
pytestmark = pytest.mark.pollkit_misuse

#: Every method but close(), called the way a user would.
CALLS: dict[str, Callable[[Poller, int], object]] = {
    "register": lambda p, fd: p.register(fd, READ),
    "modify": lambda p, fd: p.modify(fd, WRITE),
    "unregister": lambda p, fd: p.unregister(fd),
    "poll(None)": lambda p, fd: p.poll(),
    "poll(0)": lambda p, fd: p.poll(0),
    "poll(1.0)": lambda p, fd: p.poll(1.0),
    "poll(max_events)": lambda p, fd: p.poll(0, max_events=1),
    "wakeup": lambda p, fd: p.wakeup(),
    "fileno": lambda p, fd: p.fileno(),
    "len": lambda p, fd: len(p),
    "contains": lambda p, fd: fd in p,
    "enter": lambda p, fd: p.__enter__(),
    "get_registration": lambda p, fd: p.get_registration(fd),
}


def test_close_is_idempotent(poller: Poller) -> None:
    states = [poller.closed]
    poller.close()
    states.append(poller.closed)
    poller.close()
    states.append(poller.closed)
    assert states == [False, True, True]


@pytest.mark.parametrize("call", list(CALLS))
def test_every_other_method_raises_after_close(
    poller: Poller, socketpair: SocketPair, call: str
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    poller.close()
    with pytest.raises(PollerClosedError, match="closed"):
        CALLS[call](poller, left.fileno())
    assert poller.closed


def test_close_with_registered_fds_leaves_them_open(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ)
    poller.close()
    right.send(b"x")
    assert left.recv(1) == b"x"


def test_close_releases_the_pollers_fds(poller_factory: Callable[[], Poller]) -> None:
    before = open_fds()
    poller = poller_factory()
    assert open_fds() - before
    poller.close()
    assert open_fds() - before == set()


def test_pollers_fds_are_not_inheritable(poller_factory: Callable[[], Poller]) -> None:
    before = open_fds()
    poller = poller_factory()
    own = open_fds() - before
    assert own, "the poller has no fd of its own: where is the waker?"
    for fd in own:
        assert not os.get_inheritable(fd), f"fd {fd} of the {poller.name} poller is inheritable"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_fileno_where_there_is_a_kernel_object(
    poller_factory: Callable[[], Poller],
) -> None:
    before = open_fds()
    poller = poller_factory()
    own = open_fds() - before
    if "fileno" in poller.features:
        fd = poller.fileno()
        assert fd in own
        assert not os.get_inheritable(fd)
    else:
        with pytest.raises(UnsupportedFeatureError):
            poller.fileno()


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
def test_context_manager_closes(
    poller_factory: Callable[[], Poller], socketpair: SocketPair
) -> None:
    left, right = socketpair
    with poller_factory() as poller:
        assert not poller.closed
        poller.register(left, READ)
        right.send(b"x")
        assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert poller.closed


def test_context_manager_closes_on_error_and_propagates(
    poller_factory: Callable[[], Poller],
) -> None:
    class Boom(Exception):
        pass

    poller = poller_factory()

    def use() -> None:
        with poller as entered:
            assert entered is poller
            raise Boom

    with pytest.raises(Boom):
        use()
    assert poller.closed


def test_name_and_features_survive_close(poller: Poller, poller_backend: str) -> None:
    features = poller.features
    poller.close()
    assert poller.name == poller_backend
    assert poller.features == features
    assert "closed" in repr(poller)
