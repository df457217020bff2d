"""poll-only behaviour: ``POLLNVAL``, no kernel object, regular files."""

from __future__ import annotations

import select
import tempfile
import time

import pytest

from conftest import CLOCK_EPSILON, INVALID, READ, READ_HANGUP, WRITE, SocketPair, masks_by_fd
from pollkit import Poller, UnsupportedFeatureError

pytestmark = [pytest.mark.pollkit_backends("poll"), pytest.mark.pollkit_exact]


def test_raw_poll_busy_loops_on_a_closed_fd(socketpair: SocketPair) -> None:
    """The pitfall the driver hides: poll(2) reports POLLNVAL at once, every call."""
    left, _ = socketpair
    raw = select.poll()
    raw.register(left.fileno(), select.POLLIN)
    fd = left.fileno()
    left.close()
    for _ in range(3):
        started = time.monotonic()
        assert raw.poll(1000) == [(fd, select.POLLNVAL)]
        assert time.monotonic() - started < 0.5


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_driver_reports_pollnval_once_then_waits(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    fd = left.fileno()
    left.close()
    assert poller.poll(1.0) == [(fd, INVALID)]
    assert fd not in poller
    timeout = 0.05
    for _ in range(3):
        started = time.monotonic()
        assert poller.poll(timeout) == []
        assert time.monotonic() - started >= timeout - CLOCK_EPSILON


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_closed_disarmed_oneshot_is_not_reported(poller: Poller, socketpair: SocketPair) -> None:
    # A disarmed oneshot fd is out of the pollfd array, so no POLLNVAL for it.
    left, right = socketpair
    poller.register(left, READ, oneshot=True)
    right.send(b"x")
    assert poller.poll(1.0) == [(left.fileno(), READ)]
    fd = left.fileno()
    left.close()
    assert poller.poll(0.02) == []
    poller.unregister(fd)
    assert len(poller) == 0


def test_no_kernel_object_so_no_fileno(poller: Poller) -> None:
    assert "fileno" not in poller.features
    with pytest.raises(UnsupportedFeatureError, match="fileno"):
        poller.fileno()


def test_regular_file_is_always_ready(poller: Poller) -> None:
    with tempfile.TemporaryFile() as regular:
        poller.register(regular, READ | WRITE)
        assert masks_by_fd(poller.poll(0)) == {regular.fileno(): READ | WRITE}
        poller.unregister(regular)


def test_read_hangup_is_supported(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ_HANGUP)
    right.shutdown(2)
    assert masks_by_fd(poller.poll(1.0))[left.fileno()] & READ_HANGUP
