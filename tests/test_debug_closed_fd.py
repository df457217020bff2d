"""debug: check 1, an fd closed or replaced by another file while registered.

The file's identity is taken at ``register()`` and compared when the fd is
reported, modified or unregistered; one warning per registration.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from collections.abc import Callable

import pytest

from conftest import PROMPT, READ, SocketPair
from debug_helpers import PollkitDebugWarning, debug_poller, next_line, warning_about


@pytest.mark.timeout(30)
def test_closed_while_registered_is_named_once(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    ours, _ = make_socketpair()
    fd = ours.fileno()
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(ours, READ)
        ours.close()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            # poll and select report it (INVALID); epoll forgets it and only
            # unregister() finds it closed.
            poller.poll(0)
            poller.poll(0)
            poller.unregister(fd)
    debug_warnings = [w for w in seen if w.category is PollkitDebugWarning]
    assert len(debug_warnings) == 1, [str(w.message) for w in seen]
    assert re.search(warning_about(fd, "was closed while registered", line), str(seen[0].message))
    # The warning points at the application's call, not into pollkit.
    assert seen[0].filename == __file__


@pytest.mark.timeout(30)
def test_closed_while_a_duplicate_keeps_it_open(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    """epoll goes on reporting the closed number (its file is still open via the dup)."""
    ours, peer = make_socketpair()
    fd = ours.fileno()
    duplicate = ours.dup()
    with duplicate, debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(fd, READ)
        ours.close()
        peer.send(b"x")
        with pytest.warns(PollkitDebugWarning, match=warning_about(fd, "closed", line)):
            poller.poll(PROMPT)
        poller.unregister(fd)


@pytest.mark.timeout(30)
def test_number_reused_by_another_file(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    ours, _ = make_socketpair()
    fd = ours.fileno()
    read_fd, write_fd = os.pipe()
    try:
        with debug_poller(poller_backend) as poller:
            line = next_line()
            poller.register(fd, READ)
            ours.detach()
            # Close the socket and give its number to the pipe, as a busy
            # program's next open() would.
            os.dup2(read_fd, fd)
            os.set_blocking(fd, False)
            os.write(write_fd, b"x")
            match = warning_about(fd, r"another file \(pipe.*registered \(socket", line)

            def poll_and_unregister() -> None:
                # poll and select report the pipe under the old registration;
                # epoll does not, and unregister() finds the change.
                poller.poll(0)
                poller.unregister(fd)

            with pytest.warns(PollkitDebugWarning, match=match):
                poll_and_unregister()
    finally:
        for number in (fd, read_fd, write_fd):
            os.close(number)


@pytest.mark.timeout(30)
def test_modify_of_a_replaced_fd_is_named(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    ours, _ = make_socketpair()
    fd = ours.fileno()
    other, _ = make_socketpair()
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(fd, READ)
        # The number now names another socket.  (epoll refuses to modify a
        # pair it does not have, so it learns of it at unregister().)
        os.dup2(other.fileno(), fd)

        def modify_and_unregister() -> None:
            try:
                poller.modify(fd, READ)
            except FileNotFoundError:
                assert poller.name == "debug:epoll"
            poller.unregister(fd)

        with pytest.warns(PollkitDebugWarning, match=warning_about(fd, "another file", line)):
            modify_and_unregister()


@pytest.mark.timeout(30)
def test_unregister_before_close_draws_nothing(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    with debug_poller(poller_backend) as poller:
        for _ in range(3):
            ours, peer = make_socketpair()
            poller.register(ours, READ)
            peer.send(b"x")
            assert poller.poll(PROMPT) == [(ours.fileno(), READ)]
            poller.modify(ours, READ)
            poller.unregister(ours)
            ours.close()
            # The next pair reuses the number: a new registration, a new identity.
        with socket.socket(socket.AF_UNIX) as unused:
            assert unused.fileno() not in poller
