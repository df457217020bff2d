"""debug: check 3, a blocking fd registered.

Readiness reports can be spurious (a checksum failure drops a datagram after
select() said it was there; a peer's reset empties an accept queue), so a
blocking fd can hang the loop.  The warning comes at ``register()``.
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from conftest import READ, WRITE
from debug_helpers import PollkitDebugWarning, debug_poller, next_line, warning_about
from pollkit import open_poller


@pytest.mark.timeout(30)
def test_blocking_socket_is_named_at_register(poller_backend: str) -> None:
    with socket.socket() as listener, debug_poller(poller_backend) as poller:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        line = next_line() + 1
        with pytest.warns(PollkitDebugWarning, match=warning_about(fd, "blocking mode", line)):
            poller.register(listener, READ)
        poller.unregister(listener)


@pytest.mark.timeout(30)
def test_blocking_pipe_is_named_at_register(poller_backend: str) -> None:
    read_fd, write_fd = os.pipe()
    try:
        with debug_poller(poller_backend) as poller:
            line = next_line() + 1
            with pytest.warns(PollkitDebugWarning, match=warning_about(write_fd, "pipe", line)):
                poller.register(write_fd, WRITE)
            poller.unregister(write_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)


@pytest.mark.timeout(30)
def test_non_blocking_fds_draw_nothing(poller_backend: str) -> None:
    left, right = socket.socketpair()
    read_fd, write_fd = os.pipe()
    with left, right, debug_poller(poller_backend) as poller:
        try:
            left.setblocking(False)
            os.set_blocking(read_fd, False)
            poller.register(left, READ | WRITE)
            poller.register(read_fd, READ)
            assert len(poller) == 2
            poller.unregister(left)
            poller.unregister(read_fd)
        finally:
            os.close(read_fd)
            os.close(write_fd)


@pytest.mark.pollkit_backends("poll", "select")  # epoll refuses regular files (EPERM)
@pytest.mark.timeout(30)
def test_regular_file_draws_nothing(poller_backend: str) -> None:
    """A regular file's reads never wait, so O_NONBLOCK means nothing there."""
    with tempfile.TemporaryFile() as file, debug_poller(poller_backend) as poller:
        poller.register(file, READ)
        assert poller.poll(0) == [(file.fileno(), READ)]
        poller.unregister(file)


@pytest.mark.timeout(30)
def test_nested_epoll_fd_draws_nothing(poller_backend: str) -> None:
    """O_NONBLOCK does not change epoll_wait(): a nested poller's fd is exempt."""
    with open_poller("epoll") as nested, debug_poller(poller_backend) as poller:
        poller.register(nested.fileno(), READ)
        poller.unregister(nested.fileno())


@pytest.mark.timeout(30)
def test_blocking_eventfd_is_named(poller_backend: str) -> None:
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        with debug_poller(poller_backend) as poller:
            line = next_line() + 1
            with pytest.warns(PollkitDebugWarning, match=warning_about(fd, "anonymous", line)):
                poller.register(fd, READ)
            poller.unregister(fd)
    finally:
        os.close(fd)
