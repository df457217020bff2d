"""select-only behaviour: ``EBADF`` recovery, ``FD_SETSIZE`` for its own fds."""

from __future__ import annotations

import errno
import gc
import os
import select
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import INVALID, PRIORITY, READ, READ_HANGUP, WRITE, SocketPair, masks_by_fd
from pollkit import (
    FD_SETSIZE,
    FdOutOfRangeError,
    Poller,
    SelectPoller,
    UnsupportedFeatureError,
    available_backends,
)

pytestmark = [pytest.mark.pollkit_backends("select"), pytest.mark.pollkit_exact]


def test_raw_select_fails_for_everyone_on_one_closed_fd(
    make_socketpair: Callable[[], SocketPair],
) -> None:
    """The pitfall the driver hides: one closed fd makes select(2) fail outright."""
    live, peer = make_socketpair()
    doomed, _ = make_socketpair()
    fds = [live.fileno(), doomed.fileno()]
    peer.send(b"x")
    doomed.close()
    with pytest.raises(OSError) as caught:  # noqa: PT011  # checked by errno just below
        select.select(fds, [], [], 0)
    assert caught.value.errno == errno.EBADF


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_ebadf_recovery_reports_the_closed_fd_and_the_rest(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    live, peer = make_socketpair()
    writer, _ = make_socketpair()
    doomed, _ = make_socketpair()
    poller.register(live, READ)
    poller.register(writer, WRITE)
    poller.register(doomed, READ | WRITE | PRIORITY)
    fd = doomed.fileno()
    doomed.close()
    peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {
        fd: INVALID,
        live.fileno(): READ,
        writer.fileno(): WRITE,
    }
    assert fd not in poller
    assert masks_by_fd(poller.poll(1.0)) == {live.fileno(): READ, writer.fileno(): WRITE}
    poller.unregister(fd)


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_ebadf_recovery_does_not_wait(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    quiet, _ = make_socketpair()
    doomed, _ = make_socketpair()
    poller.register(quiet, READ)
    poller.register(doomed, READ)
    fd = doomed.fileno()
    doomed.close()
    # Reported at once, like poll's POLLNVAL, however long the timeout.
    assert poller.poll(None) == [(fd, INVALID)]


def test_read_hangup_is_refused(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    with pytest.raises(UnsupportedFeatureError, match="READ_HANGUP"):
        poller.register(left, READ | READ_HANGUP)
    assert len(poller) == 0


def test_regular_file_is_always_ready(poller: Poller, tmp_path: Path) -> None:
    path = tmp_path / "f"
    with open(path, "wb") as regular:
        poller.register(regular, READ | WRITE)
        assert masks_by_fd(poller.poll(0)) == {regular.fileno(): READ | WRITE}
        poller.unregister(regular)


@pytest.fixture
def low_fds_used_up() -> Iterator[None]:
    """Occupy every free fd below ``FD_SETSIZE``, so new fds land above it."""
    taken: list[int] = []
    try:
        for _ in range(FD_SETSIZE + 1):
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if fd >= FD_SETSIZE:
                os.close(fd)
                break
            taken.append(fd)
        yield
    finally:
        for fd in taken:
            os.close(fd)


@pytest.mark.usefixtures("low_fds_used_up")
def test_no_free_fd_below_fd_setsize_refuses_to_open() -> None:
    with pytest.raises(FdOutOfRangeError) as caught:
        SelectPoller()
    message = str(caught.value)
    assert "epoll" in message or "poll driver" in message, message
    assert "select" not in available_backends()


@pytest.mark.usefixtures("low_fds_used_up")
def test_failed_construction_never_closes_a_reused_fd_number() -> None:
    """Regression: ``SelectPoller()`` closed its waker when it refused to
    open, and its ``__del__`` closed the same number again later, by then
    possibly another file's."""
    errors: list[FdOutOfRangeError] = []
    try:
        SelectPoller()
    except FdOutOfRangeError as exc:
        errors.append(exc)  # its traceback keeps the half-built poller alive
    assert errors, "SelectPoller() opened with no fd below FD_SETSIZE"
    victim = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        errors.clear()
        gc.collect()
        os.fstat(victim)  # EBADF if the poller's __del__ closed it
    finally:
        os.close(victim)
