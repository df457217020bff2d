"""Server layer, line 4: a callback that raises aborts that connection only.

The exception is logged with its traceback (logger ``pollkit.server``) and
passed to ``connection_lost()``.  A timer, reader or ``call_soon_threadsafe``
callback that raises is logged; the server goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from echo_helpers import PROMPT, connect, recv_exactly, sees_eof, wait_until
from pollkit import Poller
from pollkit.server import Server, Transport
from server_helpers import (
    BufferedFrameCounter,
    CallLog,
    Recorder,
    UpperLines,
    check_lifecycle,
    frame,
    frame_replies,
    on_loop,
    serving,
)

LOGGER = "pollkit.server"


class Boom(Exception):
    """What the test's callbacks raise."""


def logged(caplog: pytest.LogCaptureFixture, error: BaseException) -> list[logging.LogRecord]:
    """Records from the server's logger that carry ``error`` with its traceback."""
    return [
        record
        for record in caplog.records
        if (record.name == LOGGER or record.name.startswith(LOGGER + "."))
        and record.exc_info is not None
        and record.exc_info[1] is error
        and record.exc_info[2] is not None
    ]


def raise_on(name: str) -> CallLog:
    """A CallLog whose first connection's ``name`` callback raises a fresh Boom."""

    def hook(protocol: Recorder, *arguments: object) -> None:
        if protocol is protocol.log.protocols[0]:
            error = Boom(f"{name} failed")
            protocol.notes["raised"] = error
            raise error

    return CallLog(**{name: hook})


def upper_lines_served(server: Server) -> None:
    """Another client is served as usual."""
    with connect(server.address) as other:
        other.sendall(b"still here\n")
        assert recv_exactly(other, 11) == b"STILL HERE\n"


@pytest.mark.parametrize("callback", ["connection_made", "data_received", "eof_received"])
@pytest.mark.timeout(30)
def test_a_raising_callback_aborts_only_its_connection(
    poller: Poller, caplog: pytest.LogCaptureFixture, callback: str
) -> None:
    log = raise_on(callback)
    with (
        serving(poller, log.factory) as server,
        connect(server.address) as failing,
        connect(server.address) as bystander,
    ):
        first, second = log.wait_protocols(2)
        failing.sendall(b"trigger\n")
        if callback == "eof_received":
            failing.shutdown(socket.SHUT_WR)
        assert sees_eof(failing)
        first.wait_for("connection_lost")
        error = first.notes["raised"]
        assert first.argument("connection_lost") is error
        # The other connection is untouched: still open, still served.
        bystander.sendall(b"ping")
        assert second.wait_received(4) == b"ping"
        assert not second.lost()
    assert len(logged(caplog, error)) == 1, [r.getMessage() for r in caplog.records]
    check_lifecycle(first)
    check_lifecycle(second)


@pytest.mark.timeout(30)
def test_a_raising_connection_lost_is_logged_once(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    log = raise_on("connection_lost")
    with serving(poller, log.factory) as server:
        with connect(server.address):
            (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
        upper_lines_served_by(server, log)
    assert len(logged(caplog, protocol.notes["raised"])) == 1
    check_lifecycle(protocol)


def upper_lines_served_by(server: Server, log: CallLog) -> None:
    """A second client still connects and is read after the first one's failure."""
    with connect(server.address) as other:
        other.sendall(b"next")
        second = log.wait_protocols(2)[1]
        assert second.wait_received(4) == b"next"


@pytest.mark.timeout(30)
def test_a_raising_pause_writing_aborts_its_connection(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    def flood(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"x" * (1024 * 1024))

    def fail(protocol: Recorder) -> None:
        error = Boom("pause_writing failed")
        protocol.notes["raised"] = error
        raise error

    log = CallLog(data_received=flood, pause_writing=fail)
    with (
        serving(poller, log.factory, max_buffer=64 * 1024, socket_buffer=16384) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
        assert sees_eof(sock)
        error = protocol.notes["raised"]
        assert protocol.argument("connection_lost") is error
        upper_lines_served_by(server, log)
    assert len(logged(caplog, error)) == 1
    check_lifecycle(protocol)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


@pytest.mark.timeout(30)
def test_raising_timer_reader_and_threadsafe_callbacks_are_logged_and_the_server_goes_on(
    poller: Poller, caplog: pytest.LogCaptureFixture, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    errors = {name: Boom(name) for name in ("timer", "reader", "soon")}
    reader_calls = threading.Event()
    later = threading.Event()

    def raise_error(name: str) -> None:
        raise errors[name]

    def on_readable() -> None:
        os.read(read_fd, 100)
        reader_calls.set()
        raise errors["reader"]

    with serving(poller, UpperLines) as server:
        on_loop(server, lambda: server.add_reader(read_fd, on_readable))
        on_loop(server, lambda: server.call_later(0, raise_error, "timer"))
        server.call_soon_threadsafe(raise_error, "soon")
        os.write(write_fd, b"!")
        assert reader_calls.wait(PROMPT)
        # The loop is alive: a later timer runs, a client is served.
        on_loop(server, lambda: server.call_later(0.01, later.set))
        assert later.wait(PROMPT)
        upper_lines_served(server)
        on_loop(server, lambda: server.remove_reader(read_fd))
    for name, error in errors.items():
        assert len(logged(caplog, error)) == 1, name


@pytest.mark.timeout(30)
def test_an_error_in_one_connection_does_not_reach_others_in_the_same_turn(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    """Several connections ready in one ``poll()``; the first one served raises.
    The others are still served (none skipped for that turn, none closed)."""

    def fail_on_bang(protocol: Recorder, data: bytes) -> None:
        if b"!" in data:
            raise Boom("bang")
        transport = protocol.transport
        assert isinstance(transport, Transport)
        transport.write(data.upper())

    log = CallLog(data_received=fail_on_bang)
    with serving(poller, log.factory) as server:
        socks = [connect(server.address) for _ in range(5)]
        try:
            log.wait_protocols(5)
            release = threading.Event()
            server.call_soon_threadsafe(release.wait, PROMPT)  # hold the loop
            for index, sock in enumerate(socks):
                sock.sendall(b"!" if index == 2 else b"abc")
            release.set()
            for index, sock in enumerate(socks):
                if index == 2:
                    assert sees_eof(sock)
                else:
                    assert recv_exactly(sock, 3) == b"ABC"
        finally:
            for sock in socks:
                sock.close()
    lost = [p for p in log.protocols if isinstance(p.argument("connection_lost"), Boom)]
    assert len(lost) == 1


class FailingBuffered(BufferedFrameCounter):
    """A BufferedProtocol whose ``get_buffer()`` or ``buffer_updated()`` raises once."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.error: Boom | None = None
        self.lost: list[Exception | None] = []

    def _maybe_fail(self, name: str) -> None:
        if name == self.where and self.error is None:
            self.error = Boom(f"{name} failed")
            raise self.error

    def get_buffer(self, sizehint: int) -> memoryview:
        self._maybe_fail("get_buffer")
        return super().get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._maybe_fail("buffer_updated")
        super().buffer_updated(nbytes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


@pytest.mark.parametrize("where", ["get_buffer", "buffer_updated"])
@pytest.mark.timeout(30)
def test_a_raising_buffered_protocol_aborts_only_its_connection(
    poller: Poller, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    made: list[FailingBuffered] = []

    def factory() -> BufferedFrameCounter:
        # The first connection fails; the next ones are plain frame counters.
        made.append(FailingBuffered(where if not made else "nowhere"))
        return made[-1]

    with serving(poller, factory) as server, connect(server.address) as failing:
        failing.sendall(frame(b"first"))
        assert sees_eof(failing)
        wait_until(lambda: made[0].lost, what="connection_lost() of the failing connection")
        with connect(server.address) as other:
            other.sendall(frame(b"second"))
            assert recv_exactly(other, 8) == frame_replies([b"second"])
    error = made[0].error
    assert error is not None
    assert made[0].lost == [error]
    assert len(logged(caplog, error)) == 1
