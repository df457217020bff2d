"""debug: check 2, the spin detector.

An fd reported on many consecutive ``poll()`` calls while the program makes no
progress on it draws a warning: input never read, WRITE interest with nothing
to send, an end of input or a hang-up never handled.  A correct program,
however busy, draws nothing -- including the cases a naive detector gets
wrong: a reader that keeps a constant backlog, a writer thread that refills a
full buffer as fast as the loop reads it, a waker drained on every call, a
listener accepting connection after connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import PROMPT, READ, WRITE, SocketPair, drain
from debug_helpers import (
    SPIN_LOOP,
    Delegating,
    PollkitDebugWarning,
    debug_poller,
    next_line,
    run_loop,
    warning_about,
)
from pollkit import Poller, open_poller
from pollkit._backends import parse_backend
from pollkit._debug import DEFAULT_SPIN_THRESHOLD, DebugPoller

#: A loop long enough that the detector judged the fd (it samples after a
#: few reports, then needs DEFAULT_SPIN_THRESHOLD more).
JUDGED = DEFAULT_SPIN_THRESHOLD + 16


def _ignore(fd: int, mask: int) -> None:
    """A handler that never handles anything: the bug."""


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is non-blocking: ``(read_fd, write_fd)``; closed after."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    fds = [read_fd, write_fd]
    yield read_fd, write_fd
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass  # the test closed it on purpose


# -- input never read -------------------------------------------------------------


@pytest.mark.timeout(30)
def test_input_never_read_is_a_spin(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    client, server = make_tcp_pair()
    client.send(b"x" * 100)
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(server, READ)
        assert poller.poll(PROMPT) == [(server.fileno(), READ)]
        match = warning_about(server.fileno(), r"input was never read \(100 bytes", line)
        with pytest.warns(PollkitDebugWarning, match=match):
            run_loop(poller, _ignore)
        poller.unregister(server)


@pytest.mark.timeout(30)
def test_reader_with_a_constant_backlog_draws_nothing(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    """The peer sends as much as the loop reads: the queue never changes, yet it is read."""
    client, server = make_tcp_pair()
    client.send(b"backlog!" * 64)
    with debug_poller(poller_backend) as poller:
        poller.register(server, READ)
        handled = run_loop(
            poller,
            lambda fd, mask: server.recv(100),
            before=lambda: client.send(b"y" * 100),
            timeout=PROMPT,
        )
        poller.unregister(server)
    assert handled >= JUDGED


# -- WRITE interest with nothing to send -------------------------------------------


@pytest.mark.timeout(30)
def test_write_interest_with_nothing_to_send_is_a_spin(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    _, server = make_tcp_pair()
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(server, WRITE)
        match = warning_about(server.fileno(), "nothing was written", line)
        with pytest.warns(PollkitDebugWarning, match=match):
            run_loop(poller, _ignore)
        poller.unregister(server)


@pytest.mark.timeout(30)
def test_writer_that_writes_on_every_report_draws_nothing(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    """WRITE interest while output is pending, one chunk per report, then modify() it away."""
    client, server = make_tcp_pair()
    pending = [b"z" * 1000] * (2 * SPIN_LOOP)
    written = 0

    with debug_poller(poller_backend) as poller:

        def handle(fd: int, mask: int) -> None:
            nonlocal written
            if mask & WRITE:
                written += server.send(pending.pop())
                if not pending:
                    poller.modify(server, READ)

        poller.register(server, WRITE)
        handled = run_loop(poller, handle, before=lambda: drain(client), timeout=PROMPT)
        poller.unregister(server)
    assert handled >= JUDGED
    assert written == 1000 * handled


# -- end of input never handled ------------------------------------------------------


@pytest.mark.timeout(30)
def test_end_of_input_never_handled_is_a_spin(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    client, server = make_tcp_pair()
    client.close()
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(server, READ)
        match = warning_about(server.fileno(), "end of input", line)
        with pytest.warns(PollkitDebugWarning, match=match):
            # The bug: recv() returns b"" and the loop carries on reading.
            run_loop(poller, lambda fd, mask: server.recv(100), timeout=PROMPT)
        poller.unregister(server)


@pytest.mark.timeout(30)
def test_end_of_input_handled_draws_nothing(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    client, server = make_tcp_pair()
    client.send(b"last words")
    client.close()
    received = bytearray()
    with debug_poller(poller_backend) as poller:

        def handle(fd: int, mask: int) -> None:
            data = server.recv(4)
            received.extend(data)
            if not data:
                poller.unregister(server)

        poller.register(server, READ)
        run_loop(poller, handle)
        assert server not in poller
    assert received == b"last words"


# -- hang-up never handled (pipes and AF_UNIX sockets: no byte counters) -----------------


@pytest.fixture(params=["pipe", "unix"])
def hung_up(request: pytest.FixtureRequest, make_socketpair: Callable[[], SocketPair]) -> int:
    """A readable fd whose writer is gone: a pipe's read end, or an AF_UNIX socket's."""
    if request.param == "pipe":
        read_fd, write_fd = request.getfixturevalue("pipe")
        os.close(write_fd)
        return int(read_fd)
    ours, peer = make_socketpair()
    peer.close()
    return ours.fileno()


@pytest.mark.timeout(30)
def test_hang_up_never_handled_is_a_spin(poller_backend: str, hung_up: int) -> None:
    with debug_poller(poller_backend) as poller:
        line = next_line()
        poller.register(hung_up, READ)
        # select reports a hang-up as READ: then it is "end of input".
        match = warning_about(hung_up, "(hang-up or error was never handled|end of input)", line)
        with pytest.warns(PollkitDebugWarning, match=match):
            run_loop(poller, lambda fd, mask: os.read(fd, 100), timeout=PROMPT)
        poller.unregister(hung_up)


@pytest.mark.timeout(30)
def test_hang_up_handled_draws_nothing(poller_backend: str, hung_up: int) -> None:
    with debug_poller(poller_backend) as poller:

        def handle(fd: int, mask: int) -> None:
            if not os.read(fd, 100):
                poller.unregister(fd)

        poller.register(hung_up, READ)
        run_loop(poller, handle)
        assert hung_up not in poller


class ReportsReadAlways(Delegating):
    """Reports one fd READ on every call, ready or not: a reader that others always beat."""

    def __init__(self, inner: Poller, fd: int) -> None:
        super().__init__(inner)
        self.fd = fd

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        self.inner.poll(0, max_events)
        return [(self.fd, READ)]


@pytest.mark.timeout(30)
def test_read_reports_with_nothing_to_read_are_not_end_of_input(
    poller_backend: str, pipe: tuple[int, int], make_socketpair: Callable[[], SocketPair]
) -> None:
    """READ with an empty queue is end of input only if the writer is gone."""
    ours, _ = make_socketpair()
    for fd in (pipe[0], ours.fileno()):
        inner = ReportsReadAlways(open_poller(parse_backend(poller_backend).driver), fd)
        with DebugPoller(inner) as poller:
            poller.register(fd, READ)

            def handle(fd: int, mask: int) -> None:
                with pytest.raises(BlockingIOError):
                    os.read(fd, 100)

            assert run_loop(poller, handle) == SPIN_LOOP
            poller.unregister(fd)


# -- busy correct programs -------------------------------------------------------------


@pytest.mark.timeout(30)
def test_wakers_drained_on_every_call_draw_nothing(
    poller_backend: str, pipe: tuple[int, int]
) -> None:
    """A pipe that keeps a backlog, and an eventfd, each written and drained per call."""
    read_fd, write_fd = pipe
    os.write(write_fd, b"backlog")
    event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        with debug_poller(poller_backend) as poller:

            def before() -> None:
                os.write(write_fd, b"!")
                os.eventfd_write(event_fd, 1)

            def handle(fd: int, mask: int) -> None:
                if fd == read_fd:
                    os.read(read_fd, 1)
                else:
                    os.eventfd_read(event_fd)

            poller.register(read_fd, READ)
            poller.register(event_fd, READ)
            handled = run_loop(poller, handle, before=before, timeout=PROMPT)
            poller.unregister(read_fd)
            poller.unregister(event_fd)
    finally:
        os.close(event_fd)
    assert handled >= 2 * JUDGED


@pytest.mark.timeout(30)
def test_reading_a_buffer_a_writer_keeps_full_draws_nothing(poller_backend: str) -> None:
    """A writer thread refills the AF_UNIX buffer as fast as the loop takes small reads."""
    writer, reader = socket.socketpair()
    payload = os.urandom(2 * 1024 * 1024)
    received = bytearray()
    with writer, reader:
        reader.setblocking(False)

        def write_all() -> None:
            try:
                writer.sendall(payload)
            finally:
                writer.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=write_all, name="full-buffer-writer", daemon=True)
        with debug_poller(poller_backend) as poller:
            poller.register(reader, READ)
            thread.start()
            deadline = time.monotonic() + 20
            while reader in poller and time.monotonic() < deadline:
                for _, _ in poller.poll(PROMPT):
                    data = reader.recv(4096)
                    received.extend(data)
                    if not data:
                        poller.unregister(reader)
            thread.join(PROMPT)
            if reader in poller:
                poller.unregister(reader)
    assert not thread.is_alive()
    assert received == payload


@pytest.mark.timeout(30)
def test_listener_accepting_many_connections_draws_nothing(poller_backend: str) -> None:
    clients: list[socket.socket] = []
    accepted = 0
    with socket.socket() as listener, debug_poller(poller_backend) as poller:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)

        def connect() -> None:
            clients.append(socket.create_connection(listener.getsockname(), timeout=PROMPT))

        def handle(fd: int, mask: int) -> None:
            nonlocal accepted
            connection, _ = listener.accept()
            connection.close()
            accepted += 1

        try:
            poller.register(listener, READ)
            run_loop(poller, handle, before=connect, calls=JUDGED + 8, timeout=PROMPT)
            poller.unregister(listener)
        finally:
            for client in clients:
                client.close()
    assert accepted == JUDGED + 8


# -- tuning ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_spin_threshold_is_tunable(
    poller_backend: str, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    _, server = make_tcp_pair()
    poller = DebugPoller(open_poller(parse_backend(poller_backend).driver), spin_threshold=4)
    with poller:
        poller.register(server, WRITE)
        with pytest.warns(PollkitDebugWarning, match="nothing was written"):
            # 8 reports before sampling starts, then 4 without progress.
            run_loop(poller, _ignore, calls=8 + 1 + 4)
        poller.unregister(server)
